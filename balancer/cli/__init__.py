"""The operator's command line (``python -m balancer.cli``), a client of the sidecar's API."""
