"""Two balancers, one address: keepalived (VRRP) moves the cluster file's floating address between them.

Every balancer host runs the same rendered haproxy.cfg and its own keepalived, configured from the
cluster file (``balancers``, ``floating``) by ``render_keepalived_config``. The first healthy balancer to
hear no advert for its master-down time takes the address (the highest priority among those started together;
with ``nopreempt`` a higher priority started later does not take it back); a holder that dies or loses its
link stops its VRRP adverts and another takes the address about three advert intervals later; a holder whose HAProxy
stops answering (``balancer/haproxy/alive.py``, ``vrrp_script``) gives it up at once. launch.py
runs keepalived as a supervised child of the balancer's sidecar (``KeepalivedChild``).

Sticky sessions survive the move: both HAProxies route the same way (cookie values are node names;
the affinity key is hashed on the same server list with ``hash-type consistent``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.config.host import local_addresses
from balancer.config.nodes import BalancerHostSpec
from balancer.haproxy import alive
from balancer.haproxy.runtime_protocol import ServerState
from balancer.multihost.keepalived_leftovers import Leftovers
from balancer.supervision.children import CommandProcess
from balancer.supervision.hang import ProbeAnswer
from webui.contract import VRRP_STATES

logger = logging.getLogger(__name__)

KEEPALIVED = "keepalived"
CHECK_SCRIPT = Path(alive.__file__)
NOTIFY_SCRIPT = Path(__file__).with_name("keepalived_notify.py")
STATE_FILE = "keepalived.state"
"""In the run dir: this balancer's VRRP state, as keepalived's notify script last wrote it."""
RUNNING_STATES = ("MASTER", "BACKUP", "FAULT")
"""States a keepalived that runs its VRRP instance reports (FAULT: it runs, but this host's HAProxy fails its check)."""
NONLOCAL_BIND = Path("/proc/sys/net/ipv4/ip_nonlocal_bind")
CONFIG_TEST_TIMEOUT = 10.0


class KeepalivedError(RuntimeError):
    """keepalived cannot run here (missing, not root, or its configuration rejected); the message says why."""


def script_line(*args: str | Path) -> str:
    """A ``script``/``notify`` command line for keepalived.conf: each argument in single quotes (keepalived
    splits on spaces and honours quotes), so an install path with spaces works; one with a quote or a
    backslash is refused, since keepalived has no escape for them."""
    words = [str(arg) for arg in args]
    for word in words:
        if any(char in word for char in "'\"\\"):
            raise ClusterConfigError(f"{word}: keepalived's script paths must not contain quotes or backslashes; "
                                     "install portrait-ha (and its run directory) under a plainer path")
    return " ".join(f"'{word}'" for word in words)


def render_keepalived_config(spec: ClusterSpec, me: BalancerHostSpec) -> str:
    """keepalived.conf for balancer ``me``: one VRRP instance holding the floating address, unicast to the
    other balancers, tied to this host's HAProxy."""
    floating = spec.floating
    if floating is None:
        raise ClusterConfigError("floating: not set; keepalived has no address to move")
    peers = [b.address for b in spec.balancers if b.name != me.name]
    check = script_line(sys.executable, "-I", "-S", CHECK_SCRIPT, spec.socket_path)
    notify = script_line(sys.executable, "-I", "-S", NOTIFY_SCRIPT, vrrp_state_path(spec))
    lines = [
        f"# Rendered by portrait-ha (balancer/multihost/keepalived.py) for balancer {me.name}: do not edit, edit the",
        "# cluster file. keepalived moves the floating address to a healthy balancer.",
        "global_defs {",
        "    # The check runs as the user launch.py runs as (root: keepalived adds addresses).",
        f"    script_user {pwd.getpwuid(os.geteuid()).pw_name}",
        "    # Refuse a check script (or a directory above it) that another user could change.",
        "    enable_script_security",
        "    # Names this host in keepalived's logs.",
        f"    router_id portrait-ha-{me.name}",
        "    # Gratuitous ARPs at once when taking the address (clients and switches learn the new",
        "    # holder now), repeated once a second later in case the first ones were lost.",
        "    vrrp_garp_master_delay 1",
        "    vrrp_garp_master_repeat 3",
        "}",
        "",
        "# This host's HAProxy answers its runtime API: else this balancer gives the address up.",
        "vrrp_script haproxy_alive {",
        f'    script "{check}"',
        f"    interval {floating.check_interval}",
        "    # A check that hangs counts as failed.",
        f"    timeout {floating.check_interval}",
        "    # Failed checks in a row before giving up the address, passed ones before holding it again.",
        f"    fall {floating.check_fall}",
        f"    rise {floating.check_rise}",
        "}",
        "",
        "vrrp_instance portrait_ha {",
        "    # Every balancer starts as backup; the first to miss adverts for its master-down time takes the address.",
        "    state BACKUP",
        "    # A balancer that comes back does not take the address back (one move per failure, not two).",
        "    nopreempt",
        f"    interface {floating.interface}",
        f"    virtual_router_id {floating.router_id}",
        f"    priority {me.priority}",
        "    # VRRPv3: advert intervals below one second (a dead holder is noticed after ~3 of them).",
        "    version 3",
        f"    advert_int {_seconds(floating.advert_interval)}",
        "    # Adverts go to the other balancers by unicast: no multicast needed on the network.",
        f"    unicast_src_ip {me.address}",
        "    unicast_peer {",
        *(f"        {peer}" for peer in peers),
        "    }",
        "    virtual_ipaddress {",
        f"        {floating.address}/{floating.prefix} dev {floating.interface}",
        "    }",
        "    # No healthy HAProxy here: FAULT state, the address goes to another balancer.",
        "    track_script {",
        "        haproxy_alive",
        "    }",
        "    # Each state change (MASTER: this balancer holds the address) written to a file in the run",
        "    # dir, which the sidecar shows in /status and /metrics (keepalived's own word, not a guess).",
        f'    notify "{notify}"',
        "}",
    ]
    return "\n".join(lines) + "\n"


def vrrp_state_path(spec: ClusterSpec) -> Path:
    """Where keepalived's notify script writes this balancer's VRRP state."""
    return spec.run_dir / STATE_FILE


def _seconds(value: float) -> str:
    return f"{value:g}"


def keepalived_problem(spec: ClusterSpec) -> str | None:
    """Why this host cannot run keepalived for ``spec`` (one sentence), or None when it can."""
    if shutil.which(KEEPALIVED) is None:
        return "keepalived is not installed (Debian: apt-get install keepalived; scripts/setup.sh --dev as root)"
    if os.geteuid() != 0:
        return "keepalived adds the floating address to an interface: run the balancer as root"
    assert spec.floating is not None
    if spec.floating.address not in local_addresses() and _read_flag(NONLOCAL_BIND) != "1":
        return (f"HAProxy must listen on {spec.floating.address} before this host holds it: "
                "sysctl -w net.ipv4.ip_nonlocal_bind=1 (and in /etc/sysctl.d to keep it)")
    return None


def _read_flag(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def write_keepalived_config(spec: ClusterSpec, me: BalancerHostSpec) -> Path:
    """Render, write (run dir) and check keepalived.conf with ``keepalived --config-test``; its path
    (``KeepalivedError`` with keepalived's complaint if rejected, or why it cannot run here)."""
    problem = keepalived_problem(spec)
    if problem is not None:
        raise KeepalivedError(problem)
    path = spec.run_dir / "keepalived.conf"
    path.write_text(render_keepalived_config(spec, me), encoding="utf-8")
    try:
        checked = subprocess.run([KEEPALIVED, "--config-test", "--use-file", str(path)], capture_output=True,
                                 text=True, timeout=CONFIG_TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KeepalivedError(f"keepalived --config-test {path} did not finish") from None
    if checked.returncode != 0:
        raise KeepalivedError(f"keepalived rejected {path}: {(checked.stderr or checked.stdout).strip()}")
    return path


def pid_files(spec: ClusterSpec) -> tuple[Path, Path]:
    """keepalived's pid files in the run dir: its own and its VRRP child's."""
    return spec.run_dir / "keepalived.pid", spec.run_dir / "keepalived-vrrp.pid"


def keepalived_command(spec: ClusterSpec, config: Path) -> list[str]:
    """keepalived in the foreground, VRRP only, logging to its log file, pid files in the run dir."""
    main_pid, vrrp_pid = pid_files(spec)
    return [KEEPALIVED, "--dont-fork", "--vrrp", "--log-console", "--no-syslog", "--use-file", str(config),
            "--pid", str(main_pid), "--vrrp_pid", str(vrrp_pid)]


class KeepalivedChild(CommandProcess):
    """keepalived under the balancer's sidecar: restarted if it dies; it has no server in HAProxy. Whenever it
    ended, and before each start, what it left is cleared (``keepalived_leftovers``): its processes, the floating
    address on this host's interface, stale pid files. So a SIGKILLed holder's address is gone before the other
    balancer takes it, and the next keepalived starts the first time."""

    def __init__(self, spec: ClusterSpec, config: Path) -> None:
        super().__init__("balancer/keepalived", keepalived_command(spec, config), dict(os.environ),
                         spec.run_dir / "logs" / "keepalived.log", spec.sidecar.stop_grace,
                         (spec.run_dir / "logs",))
        self.state_path = vrrp_state_path(spec)
        self.probe_target = f"keepalived's state in {self.state_path}"
        assert spec.floating is not None
        floating = spec.floating
        self.leftovers = Leftovers(floating.address, floating.prefix, floating.interface, pid_files(spec))
        self._group: int | None = None
        """The process group of the last keepalived started (its PID): its processes are ours to end."""

    async def _clear_leftovers(self) -> None:
        await asyncio.to_thread(self.leftovers.clear, self._group)

    async def start(self) -> int:
        """Clear what the last keepalived left, then start one with no VRRP state known (the last run's file is
        removed): it tells its own."""
        await self._clear_leftovers()
        self.state_path.unlink(missing_ok=True)
        self._group = await super().start()
        return self._group

    async def wait(self) -> int:
        """Its exit status once it exited, and what it left cleared (its address first of all)."""
        returncode = await super().wait()
        await self._clear_leftovers()
        return returncode

    async def _terminate(self, grace: float) -> int:
        """Stop it (``stop``, ``kill``), then clear what it left (a SIGTERMed keepalived gives its address up itself,
        a SIGKILLed one does not)."""
        returncode = await super()._terminate(grace)
        await self._clear_leftovers()
        return returncode

    def vrrp_state(self) -> str | None:
        """MASTER (this balancer holds the floating address), BACKUP, FAULT or STOP, as keepalived last
        said; None while keepalived does not run or has said nothing yet (a small file, read at once)."""
        if self.pid is None:
            return None
        try:
            state = self.state_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return state if state in VRRP_STATES else None

    async def probe(self) -> ProbeAnswer:
        """Ready once keepalived runs its VRRP instance: its notify script wrote a state since this start."""
        return ProbeAnswer(ok=self.vrrp_state() in RUNNING_STATES)

    async def tell_haproxy(self, state: ServerState) -> None:
        """Nothing to tell: keepalived is no HAProxy server."""

    async def aclose(self) -> None:
        """Nothing to release."""
