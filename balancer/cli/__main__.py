"""``python -m balancer.cli``: the operator's commands (``balancer.cli.ctl``)."""

import sys

from balancer.cli.ctl import main

sys.exit(main())
