"""``python -m webui.web``: run one web front until SIGTERM."""

import sys

from webui.web.app import main

sys.exit(main())
