"""``python -m balancer.deploy``: Kubernetes manifests from the cluster file (``balancer.deploy.cli``)."""

import sys

from balancer.deploy.cli import main

sys.exit(main())
