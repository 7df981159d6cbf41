"""keepalived's health check of this host's HAProxy: exit 0 when its runtime API answers ``show info``.

Run by keepalived every ``floating.check_interval`` (``vrrp_script``), so it is standard library only
and starts fast (``python3 -I -S haproxy_alive.py SOCKET``): a balancer whose HAProxy does not
answer gives the floating address up (``balancer.multihost.keepalived``).
"""

import socket
import sys

TIMEOUT = 0.8
"""Seconds HAProxy has to answer (below keepalived's script timeout)."""


def haproxy_answers(socket_path: str) -> bool:
    """Whether HAProxy's runtime API at ``socket_path`` answers ``show info`` as HAProxy."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(socket_path)
            sock.sendall(b"show info\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
                if b"\nPid:" in answer:
                    return True
    except OSError:
        return False
    return False


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: haproxy_alive.py HAPROXY_SOCKET   (exit 0: HAProxy answers; 1: it does not)")
        sys.exit(0 if len(sys.argv) == 2 else 2)
    sys.exit(0 if haproxy_answers(sys.argv[1]) else 1)
