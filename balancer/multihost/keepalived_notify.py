"""keepalived's notify script: writes this balancer's VRRP state (MASTER, BACKUP, FAULT, STOP) to a file.

keepalived runs it on every state change of the floating address's VRRP instance (``notify`` in
keepalived.conf, rendered by ``balancer.multihost.keepalived``), as ``python3 -I -S keepalived_notify.py
STATE_FILE`` followed by its own arguments: ``INSTANCE NAME STATE PRIORITY``. Standard library only,
so it starts fast. The file is replaced atomically (a reader never sees half a line); the
balancer's sidecar reads it for ``/status``, ``/metrics`` and ``ctl status``.
"""

import os
import sys

STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
"""What keepalived names as the target state (anything else is not written); ``webui.contract.VRRP_STATES``,
repeated here because ``-I -S`` imports nothing of the project."""


def record(state_file: str, state: str) -> bool:
    """Write ``state`` to ``state_file`` atomically (private file); False when it is no VRRP state."""
    if state not in STATES:
        return False
    partial = f"{state_file}.{os.getpid()}"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(state + "\n")
    os.replace(partial, state_file)
    return True


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] in ("-h", "--help"):
        print("usage: keepalived_notify.py STATE_FILE INSTANCE NAME STATE [PRIORITY]   (run by keepalived)")
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    sys.exit(0 if record(sys.argv[1], sys.argv[4]) else 1)
