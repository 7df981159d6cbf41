"""``python -m webui.worker``: run one GPU worker until SIGTERM."""

import sys

from webui.worker.serve import main

sys.exit(main())
