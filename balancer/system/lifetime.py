"""Child processes that do not outlive their supervisor.

The sidecar and ``launch.py`` start their children in sessions of their own (so that a
Ctrl-C in the terminal reaches the supervisor alone, which then stops them in order). If the
supervisor itself is killed with SIGKILL it cannot stop them, so each child asks the kernel
(Linux ``PR_SET_PDEATHSIG``) for a SIGTERM when the thread that started it dies: start
children from threads that live as long as the supervisor (its main thread, or asyncio's
default executor, whose threads stay until the event loop closes).
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def terminate_with_parent() -> None:
    """``preexec_fn`` for a child: SIGTERM it when its parent dies (Linux; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
