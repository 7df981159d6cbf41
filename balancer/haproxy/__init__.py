"""HAProxy: the haproxy.cfg renderer, its process, its runtime API, the gate that tells it server states."""
