"""Real hosts for tests and benchmarks: Linux network namespaces joined by veth pairs on a bridge (root only).

``NetworkLab`` makes namespaces ``pha-<random>-<host>`` (e.g. ``-b``, ``-n1``, ``-n2``), each with
loopback up and one interface ``eth0`` on a private test subnet (``10.213.R.0/24``, R random per
lab), all joined by a bridge in a namespace of its own (``pha-<random>-sw``). The test process
reaches them through one more veth pair whose end stays here (``pha<random>c``, ``10.213.R.254``).
Processes run in a namespace with ``ip netns exec``. Faults are real: a link set down, packets
dropped by ``iptables``, every process of a namespace SIGSTOPped. ``close`` (always called by the
context manager, also on failure) kills every process left in the lab's namespaces, by PID, and
deletes the namespaces, which removes their links with them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import psutil

from bench.harness.processes import TEARDOWN_GRACE, Processes

logger = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
COMMAND_TIMEOUT = 10.0
"""Seconds one ``ip``/``iptables`` command may take."""


@functools.cache
def missing_for_labs() -> str | None:
    """Why network-namespace tests cannot run here (one sentence), or None when they can (checked once)."""
    if os.geteuid() != 0:
        return "network-namespace host tests need root (CI runs as root)"
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    if missing:
        return f"network-namespace host tests need {' and '.join(missing)} (scripts/setup.sh --dev installs iptables)"
    probe = f"pha-{secrets.token_hex(3)}-probe"
    try:
        run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = (getattr(exc, "stderr", "") or "").strip() or str(exc)
        return f"network-namespace host tests cannot create a namespace here (no CAP_SYS_ADMIN?): {detail}"
    run("ip", "netns", "del", probe)
    return None


def run(*args: str) -> str:
    """Run a command to its end (``CalledProcessError`` with its output if it fails); its stdout."""
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT).stdout


class NetworkLab:
    """Namespaces on one private subnet; ``with NetworkLab(["b", "n1", "n2"]) as lab: ...``."""

    def __init__(self, hosts: list[str], processes: Processes) -> None:
        self.tag = secrets.token_hex(3)
        self.subnet = f"10.213.{secrets.randbelow(250) + 1}"
        self.hosts = list(hosts)
        self.processes = processes
        self.address = {host: f"{self.subnet}.{index + 1}" for index, host in enumerate(hosts)}
        """Each host's address in the lab."""
        self.client_address = f"{self.subnet}.254"
        """This process's address in the lab."""
        self.switch = self.namespace("sw")
        self.client_link = f"pha{self.tag}c"
        """This process's end of its veth into the lab."""
        self._made: list[str] = []

    def namespace(self, host: str) -> str:
        """The namespace name of ``host``."""
        return f"pha-{self.tag}-{host}"

    def __enter__(self) -> NetworkLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add_namespace(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts):
            namespace = self.namespace(host)
            self._add_namespace(namespace)
            port = f"p{index}"
            run("ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", namespace)
            run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
            run("ip", "-n", namespace, "addr", "add", f"{self.address[host]}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
        # This process's own way in: a veth whose other end is on the bridge (gone with the switch namespace).
        client = self.client_link
        run("ip", "-n", self.switch, "link", "add", "pc", "type", "veth", "peer", "name", client, "netns", "1")
        run("ip", "-n", self.switch, "link", "set", "pc", "master", "br0", "up")
        run("ip", "addr", "add", f"{self.client_address}/24", "dev", client)
        run("ip", "link", "set", client, "up")
        logger.info("network lab %s: %s", self.tag, self.address)

    def start(self, host: str, args: list[str], log_name: str) -> subprocess.Popen:
        """Start ``args`` in ``host``'s namespace (stopped with the lab, or by the caller's ``Processes``)."""
        return self.processes.start(["ip", "netns", "exec", self.namespace(host), *args], log_name=log_name)

    def run_in(self, host: str, args: list[str]) -> str:
        """Run ``args`` in ``host``'s namespace to their end (``CalledProcessError`` if they fail); stdout."""
        return run("ip", "netns", "exec", self.namespace(host), *args)

    def pids(self, host: str) -> list[int]:
        """Every process in ``host``'s network namespace."""
        return self._pids_in(self.namespace(host))

    def _pids_in(self, namespace: str) -> list[int]:
        path = NETNS_DIR / namespace
        if not path.exists():
            return []
        inode = path.stat().st_ino
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == inode:
                    found.append(proc.pid)
        return found

    def signal_host(self, host: str, sig: int) -> list[int]:
        """Send ``sig`` to every process of ``host``; their PIDs."""
        pids = self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def set_link(self, host: str, up: bool) -> None:
        """Take ``host``'s only link down (or back up): from the others it is silent, no reset, no refusal."""
        run("ip", "-n", self.namespace(host), "link", "set", "eth0", "up" if up else "down")

    def has_address(self, host: str, address: str) -> bool:
        """Whether ``address`` is on ``host``'s link now and the link is up (e.g. a floating address that
        keepalived moves; a dead host's down link may keep it, unreachable)."""
        listed = run("ip", "-n", self.namespace(host), "-o", "-4", "addr", "show", "dev", "eth0", "up")
        return f" {address}/" in listed

    def sysctl(self, host: str, key: str, value: str) -> None:
        """Set a per-namespace kernel setting of ``host`` (e.g. ``net.ipv4.ip_nonlocal_bind``)."""
        run("ip", "netns", "exec", self.namespace(host), "sysctl", "-qw", f"{key}={value}")

    def drop_packets(self, host: str, dropped: bool) -> None:
        """Drop (or stop dropping) every packet ``host`` receives or sends, loopback excepted (``iptables -j
        DROP``). Both ways: with incoming packets dropped only, an answer it had ready still gets out."""
        action = "-I" if dropped else "-D"
        iptables = ["ip", "netns", "exec", self.namespace(host), "iptables", action]
        run(*iptables, "INPUT", "!", "-i", "lo", "-j", "DROP")
        run(*iptables, "OUTPUT", "!", "-o", "lo", "-j", "DROP")

    def close(self) -> None:
        """Kill every process left in the lab (SIGCONT first: a stopped one never dies of SIGTERM), delete it."""
        for namespace in self._made:
            for pid in self._pids_in(namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        self.processes.stop_all(TEARDOWN_GRACE)
        with contextlib.suppress(subprocess.CalledProcessError):  # goes with the switch namespace, but later
            run("ip", "link", "del", self.client_link)
        for namespace in self._made:
            for pid in self._pids_in(namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for namespace in reversed(self._made):
            try:
                run("ip", "netns", "del", namespace)
            except subprocess.CalledProcessError as exc:
                logger.error("could not delete network namespace %s: %s", namespace, exc.stderr.strip())
        self._made.clear()
