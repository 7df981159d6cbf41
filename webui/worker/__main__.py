"""``python -m webui.worker``: run one GPU worker until SIGTERM."""

import sys

from webui.worker.app import main

sys.exit(main())
