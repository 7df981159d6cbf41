"""``python -m bench.gpu_session``: see ``bench.gpu_session``."""

import sys

from bench.gpu_session.cli import main

if __name__ == "__main__":
    sys.exit(main())
