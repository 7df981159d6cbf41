"""``python -m balancer.deploy``: Kubernetes manifests from the cluster file (``balancer.deploy.k8s``)."""

import sys

from balancer.deploy.k8s import main

sys.exit(main())
