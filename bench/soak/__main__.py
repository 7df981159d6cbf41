"""``python -m bench.soak``: the soak's command line (``bench.soak.cli``)."""

import sys

from bench.soak.cli import main

if __name__ == "__main__":
    sys.exit(main())
