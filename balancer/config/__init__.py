"""The cluster description: its models (``ClusterSpec``), loading, launch settings, GPU assignment."""
