"""What a node host's sidecar waits on in a rolling restart: each part's own request counts (``webui.traffic``)
and what its host agent last told each balancer (``HostAgent.settled``). The whole operation on real node
hosts is ``tests/test_hosts_rolling.py``."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI

from balancer.haproxy.gate import HAProxyGate
from balancer.haproxy.runtime_protocol import ServerState
from balancer.multihost.host_agent import REPLIES, STALE_INTERVALS, HostAgent
from webui.contract import HEALTH_PATH, STICKY_NODE_HEADER, TRAFFIC_PATH
from webui.traffic import count_traffic


def test_a_part_counts_requests_in_flight_per_sticky_node_but_not_its_probes() -> None:
    app = FastAPI()
    release = asyncio.Event()

    @app.get("/slow/{name:path}")
    async def slow(name: str) -> dict:
        await release.wait()
        return {}

    @app.get(HEALTH_PATH)
    async def healthz() -> dict:
        return {}

    counts = count_traffic(app)

    async def scenario() -> tuple[dict, dict]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://part") as client:
            await client.get(HEALTH_PATH)
            slow_ones = [asyncio.create_task(client.get(f"/slow/file=/tmp/{i}.png", headers=headers))
                         for i, headers in enumerate((
                {STICKY_NODE_HEADER: "node1"}, {}, {STICKY_NODE_HEADER: "x" * 100}))]  # too long: no node
            while (during := (await client.get(TRAFFIC_PATH)).json())["in_flight"] < 3:
                await asyncio.sleep(0.01)
            release.set()
            await asyncio.gather(*slow_ones)
            return during, (await client.get(TRAFFIC_PATH)).json()

    during, after = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert during == {"in_flight": 3, "jobs": 0, "total": 3, "sticky": {"node1": {"in_flight": 1, "total": 1}},
                      "routes": {"GET /slow/file": 3}}  # named without the file
    assert after == {"in_flight": 0, "jobs": 0, "total": 3, "sticky": {"node1": {"in_flight": 0, "total": 1}},
                     "routes": {}}
    assert not counts.routes  # no name is kept once its requests ended (paths are the client's to choose)


def test_the_host_agent_knows_when_every_balancer_that_asks_took_a_state() -> None:
    states: dict[tuple[str, str], ServerState] = {("workers", "node1"): "ready"}
    agent = HostAgent("127.0.0.1", 0, states.get, interval=0.05)
    key = ("workers", "node1")
    assert not agent.settled(key)  # nobody asked yet: nobody is known to have it
    agent.reply("workers/node1\n", "10.0.0.10")
    agent.reply("workers/node1\n", "10.0.0.11")
    assert agent.settled(key)
    states[key] = "drain"
    assert not agent.settled(key)  # both were told "ready up" last
    assert agent.reply("workers/node1\n", "10.0.0.10") == REPLIES["drain"]
    assert not agent.settled(key)  # 10.0.0.11 has not asked since
    agent.reply("workers/node1\n", "10.0.0.11")
    assert agent.settled(key)
    states[key] = "maint"
    agent.reply("workers/node1\n", "10.0.0.10")
    time.sleep(STALE_INTERVALS * 0.05 + 0.05)  # 10.0.0.11 stopped asking: gone
    agent.reply("workers/node1\n", "10.0.0.10")
    assert agent.settled(key)
    assert asyncio.run(agent.wait_settled([key])) is True
    assert not agent.settled(("workers", "nosuch"))


class GuardedNodeHost:
    """A node host's gate and host agent with a guard the test opens and closes; ``told`` is what each poll got."""

    key = ("webs", "node1")

    def __init__(self) -> None:
        self.quiet = False
        self.gate = HAProxyGate(None, pulled=True)
        self.agent = HostAgent("127.0.0.1", 0, self.gate.effective, interval=0.05, state_now=self.gate.state_now)
        self.told: list[str] = []

    async def still_quiet(self) -> bool:
        return self.quiet

    async def poll(self, balancer: str = "10.0.0.10") -> None:
        self.told.append(await self.agent.answer("webs/node1\n", balancer))


def test_a_park_reaches_each_balancer_only_at_a_poll_where_its_web_front_is_still_quiet() -> None:
    """A node host's ``maint`` ends the web front's sessions in the balancer that takes it (``on-marked-down
    shutdown-sessions``), so a park is told at a poll only while its guard says nothing came since the rolling
    restart found the web front quiet; once every balancer took it, it holds whatever the guard says."""
    host = GuardedNodeHost()
    gate, key = host.gate, host.key

    async def scenario() -> list[str]:
        await gate.set_state(*key, "ready")
        await gate.hold(*key, True)  # the rolling restart drained the node
        await gate.park(*key, True, host.still_quiet)
        await host.poll("10.0.0.10")  # a job began on the web front since: not told
        assert not host.agent.settled(key)
        host.quiet = True
        await host.poll("10.0.0.10")
        await host.poll("10.0.0.11")
        assert host.agent.settled(key)
        gate.confirm_park(key)
        host.quiet = False  # the web front restarts: its counts cannot be read
        await host.poll("10.0.0.10")
        await gate.park(*key, False)
        await host.poll("10.0.0.10")
        await gate.park(*key, True, host.still_quiet)  # a new park: guarded again
        await host.poll("10.0.0.11")
        return host.told

    assert asyncio.run(scenario()) == [REPLIES["drain"], REPLIES["maint"], REPLIES["maint"], REPLIES["maint"],
                                       REPLIES["drain"], REPLIES["drain"]]


def test_an_unpark_reaches_each_balancer_only_at_a_poll_where_the_sticky_clients_are_still_quiet() -> None:
    """A restarted web front takes its sticky clients back (``maint`` ends) only at a balancer's poll where nothing
    came since the rolling restart found them quiet: a job begun meanwhile on the web front standing in for it
    keeps its next requests there, wherever the agent interval falls."""
    host = GuardedNodeHost()
    gate, key = host.gate, host.key

    async def scenario() -> list[str]:
        await gate.set_state(*key, "ready")
        await gate.park(*key, True)
        gate.confirm_park(key)
        await gate.park(*key, False, host.still_quiet)
        await host.poll()  # a sticky client's job began since the quiet moment: still parked
        host.quiet = True
        await host.poll()
        gate.confirm_park(key)
        host.quiet = False  # its clients are back: the unpark holds
        await host.poll()
        return host.told

    assert asyncio.run(scenario()) == [REPLIES["maint"], REPLIES["ready"], REPLIES["ready"]]


def test_a_local_haproxy_is_told_a_park_at_once_whatever_its_guard() -> None:
    async def never() -> bool:
        return False

    async def scenario() -> str:
        gate = HAProxyGate(None, pulled=False)  # no runtime API in this test: nothing is sent
        await gate.park("webs", "node1", True, never)
        return await gate.state_now(("webs", "node1"))

    assert asyncio.run(scenario()) == "maint"


def test_waiting_for_balancers_that_never_ask_gives_up_after_a_few_intervals() -> None:
    agent = HostAgent("127.0.0.1", 0, {("webs", "node1"): "drain"}.get, interval=0.05)
    started = time.monotonic()
    assert asyncio.run(agent.wait_settled([("webs", "node1")])) is False
    assert time.monotonic() - started < 5  # a logic bound: a few intervals and a second, not forever


def test_made_up_sticky_values_cannot_grow_the_counts_without_bound() -> None:
    """HAProxy copies the client's cookie into the header whatever its value: a client inventing a new value
    per request fills at most ``MAX_STICKY_NODES`` entries; later new values count as no node."""
    from webui.traffic import MAX_STICKY_NODES

    app = FastAPI()

    @app.get("/job")
    async def job() -> dict:
        return {}

    counts = count_traffic(app)

    async def scenario() -> dict:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://part") as client:
            for index in range(MAX_STICKY_NODES + 50):
                await client.get("/job", headers={STICKY_NODE_HEADER: f"made-up-{index}"})
            await client.get("/job", headers={STICKY_NODE_HEADER: "made-up-0"})  # a known value still counts
            return (await client.get(TRAFFIC_PATH)).json()

    after = asyncio.run(scenario())
    assert len(after["sticky"]) == MAX_STICKY_NODES and len(counts.totals) == MAX_STICKY_NODES + 1  # + no node
    assert after["sticky"]["made-up-0"]["total"] == 2 and after["total"] == MAX_STICKY_NODES + 51
