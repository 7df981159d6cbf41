"""The public frontend's rules against hostile clients, through a real HAProxy 2.8 (stand-in nodes).

Each client here has its own loopback source address (127.0.0.N), so per-client limits start fresh
for every test although they share one HAProxy:

- the rate limit counts job requests only, and only those that passed every rule;
- paths are read the way the nodes decode them: percent-encoding does not get around a rule;
- Gradio's direct ``run``/``api`` routes are refused at the edge;
- basic auth: failed logins throttled per address and per user, an unknown user name costs a
  password hash like a known one, a checked login is remembered (no hash per request);
- bodies in flight per client are capped; ``--share`` makes the site exposed (limits on).
"""

from __future__ import annotations

import base64
import itertools
import socket
from pathlib import Path

import httpx
import psutil
import pytest

from balancer.config.limits import EXPOSED_RATE_LIMIT_PER_MINUTE
from balancer.config.loading import parse_cluster
from balancer.config.settings import LaunchSettings
from balancer.haproxy.config import render_config
from tests.balancer_helpers import cluster_data
from tests.test_haproxy_config import RunningBalancer, crypt_hash, running_balancer
from webui.contract import ADOPTED_EVENT_HEADER, JOB_EVENT_INDICES, RECORD_JOB_HEADER

RATE = 3
PER_ADDRESS = 3
PER_USER = 5
BODIES = 4
PASSWORD = "secret"
USERS = ("alice", "carol", "dave")
_addresses = itertools.count(1)


def fresh_address() -> str:
    """A loopback source address no other test used (a new client for every per-client table)."""
    number = next(_addresses)
    return f"127.0.{number // 250}.{number % 250 + 2}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    """HAProxy with basic auth (three users), 3 jobs a minute per client and small login/body limits."""
    run_dir = tmp_path_factory.mktemp("edge")
    users_file = run_dir / "users"
    users_file.write_text("".join(f"{user}:{crypt_hash(PASSWORD)}\n" for user in USERS))
    limits = {"rate_limit_per_minute": RATE, "auth_failures_per_address": PER_ADDRESS,
              "auth_failures_per_user": PER_USER, "max_client_bodies": BODIES}
    data = cluster_data(run_dir, ["web1"], ["w1"], users_file=str(users_file), limits=limits)
    with running_balancer(data) as running:
        yield running


def client(edge: RunningBalancer, address: str, auth: tuple[str, str] | None = ("alice", PASSWORD)) -> httpx.Client:
    """An HTTP client of the public site from ``address``."""
    return httpx.Client(base_url=edge.public, auth=auth, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def table(edge: RunningBalancer, name: str) -> str:
    return edge.api.command(f"show table {name}")


# --- 2. the rate limit counts jobs that passed, nothing else ------------------------------------


def test_only_job_requests_that_pass_count_against_the_rate(edge: RunningBalancer) -> None:
    join, address = "/gradio_api/queue/join", fresh_address()
    with client(edge, address) as web:
        others = [web.post("/gradio_api/upload", content=b"x").status_code for _ in range(RATE)]
        others += [web.post(join, json={"fn_index": 6, "session_hash": "s", "data": []}).status_code
                   for _ in range(RATE)]  # a page event that is not a job
        assert others == [200] * (2 * RATE)
        refused = web.post("/generate", json={}, headers={"Sec-Fetch-Site": "cross-site"})
        assert refused.status_code == 403  # refused by a later rule: not counted either
        jobs = [web.post("/generate", json={}).status_code for _ in range(RATE - 1)]
        job_join = {"fn_index": JOB_EVENT_INDICES[0], "session_hash": "s", "data": []}
        jobs.append(web.post(join, json=job_join).status_code)
        assert jobs == [200] * RATE
        limited = [web.post("/generate", json={}) for _ in range(5)]
        assert [answer.status_code for answer in limited] == [429] * 5
        assert limited[0].json()["error"] == "rate_limited"
    # The retries refused with 429 are not counted: the client's rate is its 3 jobs.
    entry = next(line for line in table(edge, "job_rates").splitlines() if f"key={address} " in line)
    assert f"http_req_rate(60000)={RATE}" in entry


# --- 3. percent-encoded paths meet the same rules ----------------------------------------------


@pytest.mark.parametrize("path", ["/%74raffic", "/%6Detrics", "/gradio_api/%72un/generate",
                                  "/gradio_api%2Fapi/predict"])
def test_encoded_internal_paths_are_refused(edge: RunningBalancer, path: str) -> None:
    with client(edge, fresh_address()) as web:
        answer = web.post(path, json={"data": []})
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"


def test_encoded_probe_path_is_answered_by_haproxy(edge: RunningBalancer) -> None:
    with client(edge, fresh_address()) as web:
        assert web.get("/%72eadyz").json() == {"ready": True}  # not a node's own answer
        assert web.get("/%68ealthz").json() == {"status": "ok"}
        bad = web.get("/x%zz")
    assert bad.status_code == 400 and bad.json()["error"] == "bad_path"


def test_encoded_job_path_counts_as_a_job(edge: RunningBalancer) -> None:
    with client(edge, fresh_address()) as web:
        answers = [web.post("/%67enerate", json={}) for _ in range(RATE + 1)]
    assert [answer.status_code for answer in answers] == [200] * RATE + [429]
    # Routed to the workers like /generate: the worker's stand-in answers (it does not decode paths itself).
    assert answers[0].json()["name"] == "w1"


# --- Gradio's direct routes ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/gradio_api/run/generate", "/gradio_api/api/generate", "/gradio_api/api/predict"])
def test_gradio_direct_routes_are_refused(edge: RunningBalancer, path: str) -> None:
    with client(edge, fresh_address()) as web:
        api = web.post(path, json={"data": []})
        page = web.post(path, json={"data": []}, headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.json() == {"error": "not_found", "detail": "Not found.", "fields": []}
    assert page.status_code == 404 and page.headers["content-type"] == "text/html"


def test_the_pages_unqueued_route_passes_to_a_web_front(edge: RunningBalancer) -> None:
    """The page posts its presets and size changes to ``run/predict``; the web front judges the event there."""
    with client(edge, fresh_address()) as web:
        answer = web.post("/gradio_api/run/predict", json={"data": [], "fn_index": 5})
    assert answer.json().get("name") == "web1"


def test_a_clients_own_relay_and_record_marks_never_reach_a_node(edge: RunningBalancer) -> None:
    """Only the stream relay says a call is joined again, only HAProxy asks a worker to record a job."""
    with client(edge, fresh_address()) as web:
        answer = web.get("/", headers={ADOPTED_EVENT_HEADER: "e1", RECORD_JOB_HEADER: "1"})
    seen = {name.lower() for name in answer.json()["headers"]}
    assert answer.json()["name"] == "web1" and "x-forwarded-for" in seen, answer.json()
    assert ADOPTED_EVENT_HEADER.lower() not in seen and RECORD_JOB_HEADER.lower() not in seen


# --- 7. basic auth: throttled, constant cost, checked once ----------------------------------------


def test_failed_logins_are_throttled_per_address(edge: RunningBalancer) -> None:
    address = fresh_address()
    with client(edge, address, auth=("alice", "wrong")) as web:
        assert [web.get("/").status_code for _ in range(PER_ADDRESS)] == [401] * PER_ADDRESS
    with client(edge, address, auth=("carol", PASSWORD)) as web:
        refused = web.get("/")  # even the right password: not checked from here for a while
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_logins"
    assert refused.headers["retry-after"] == "60"
    with client(edge, fresh_address(), auth=("alice", PASSWORD)) as web:
        assert web.get("/").status_code == 200  # another address is not affected


def test_failed_logins_are_throttled_per_user(edge: RunningBalancer) -> None:
    for _ in range(PER_USER):  # each from another address: under the per-address limit
        with client(edge, fresh_address(), auth=("dave", "wrong")) as web:
            assert web.get("/").status_code == 401
    with client(edge, fresh_address(), auth=("dave", PASSWORD)) as web:
        assert web.get("/").status_code == 429
    with client(edge, fresh_address(), auth=("carol", PASSWORD)) as web:
        assert web.get("/").status_code == 200


def haproxy_cpu_seconds(edge: RunningBalancer, headers: list[str]) -> float:
    """HAProxy's CPU time (not wall time) for one request with each Authorization header, each from a new
    address; the per-user failure counts are cleared before each (the test is about cost, not throttling)."""
    process = psutil.Process(edge.haproxy.pid)
    before = sum(process.cpu_times()[:2])
    for header in headers:
        edge.api.command("clear table login_failures_by_user")
        with client(edge, fresh_address(), auth=None) as web:
            assert web.get("/", headers={"Authorization": header}).status_code == 401
    return sum(process.cpu_times()[:2]) - before


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_an_unknown_user_costs_what_a_known_one_does(edge: RunningBalancer) -> None:
    count = 60
    known = haproxy_cpu_seconds(edge, [basic("alice", f"wrong{i}") for i in range(count)])
    unknown = haproxy_cpu_seconds(edge, [basic(f"nobody{i}", f"wrong{i}") for i in range(count)])
    assert unknown > 0.5 * known, (unknown, known)


def test_a_checked_login_is_remembered(edge: RunningBalancer) -> None:
    count = 60
    with client(edge, fresh_address(), auth=("carol", PASSWORD)) as web:
        assert web.get("/").status_code == 200  # checked once, then remembered
        process = psutil.Process(edge.haproxy.pid)
        before = sum(process.cpu_times()[:2])  # HAProxy answers /healthz itself, after the login
        assert all(web.get("/healthz").status_code == 200 for _ in range(count))
        remembered = sum(process.cpu_times()[:2]) - before
    wrong = haproxy_cpu_seconds(edge, [basic("alice", f"wrong{i}") for i in range(count)])
    assert remembered < 0.3 * wrong, (remembered, wrong)


# --- bodies in flight per client; --share -----------------------------------------------------------


def test_bodies_in_flight_are_capped_per_client(edge: RunningBalancer) -> None:
    address = fresh_address()
    auth = basic("alice", PASSWORD)
    head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{edge.spec.public.port}\r\n"
            f"Authorization: {auth}\r\nContent-Length: 1000000\r\n\r\n").encode()
    held = []
    try:
        for _ in range(BODIES + 1):
            sock = socket.socket()
            sock.bind((address, 0))
            sock.connect(("127.0.0.1", edge.spec.public.port))
            sock.sendall(head + b"x" * 1000)
            held.append(sock)
        held[-1].settimeout(10)
        answer = held[-1].recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 429") and "too_many_bodies" in answer
        with client(edge, fresh_address()) as web:  # another client still gets in
            assert web.post("/gradio_api/upload", content=b"x").status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_a_share_link_makes_the_site_exposed(tmp_path: Path) -> None:
    spec = LaunchSettings(share=True, nodes=0, gpus="none", run_dir=tmp_path).cluster_spec()
    assert spec.exposed and spec.max_client_connections == 32
    assert spec.rate_limit_per_minute == EXPOSED_RATE_LIMIT_PER_MINUTE


def test_one_loopback_client_cannot_hold_every_connection(tmp_path: Path) -> None:
    spec = parse_cluster(cluster_data(tmp_path, ["web1"], ["w1"]))  # loopback, no limits given
    cap, total = spec.max_client_connections, spec.limits.max_connections
    assert 0 < 2 * cap < total
    assert f"tcp-request connection reject if {{ sc_conn_cur(0) gt {2 * cap} }}" in render_config(spec)
