"""The harness's port allocator (``bench.harness.ports``): ports reserved, not guessed.

In-process only: sockets, no servers started.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bench.harness.ports import PortAllocator, ephemeral_range, listener_ranges
from bench.harness.processes import free_port


def test_free_port_never_hands_out_a_port_twice_and_stays_out_of_the_ephemeral_range() -> None:
    first, last = ephemeral_range()
    ports = [free_port() for _ in range(1000)]  # binding port 0 and closing repeats within a few hundred
    assert len(set(ports)) == len(ports)
    assert not [port for port in ports if first <= port <= last]
    assert all(1024 < port <= 65535 for port in ports)


def test_a_port_in_use_is_skipped_and_an_exhausted_range_says_so() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        allocator = PortAllocator([range(taken, taken + 1)], seed=1)
        with pytest.raises(RuntimeError, match="no free port left: all 1 ports"):
            allocator.reserve()


def test_each_port_of_a_small_range_is_handed_out_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    ports = range(base, base + 3)
    allocator = PortAllocator([ports], seed=2)
    free = [port for port in ports if _bindable(port)]
    assert sorted(allocator.reserve() for _ in free) == free
    with pytest.raises(RuntimeError, match="handed out or in use"):
        allocator.reserve()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def test_the_listener_ranges_leave_out_the_kernels_ephemeral_range(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("32768\t60999\n")
    assert ephemeral_range(setting) == (32768, 60999)
    assert listener_ranges((32768, 60999)) == [range(10000, 32768), range(61000, 65536)]
    assert listener_ranges((1024, 65535)) == []
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)
