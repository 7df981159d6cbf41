"""More than one host: the host agent, keepalived's floating address, certificates, the parts' mutual TLS."""
