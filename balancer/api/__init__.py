"""The sidecar's HTTP API: /status, /metrics, the operator's actions behind the stats password."""
