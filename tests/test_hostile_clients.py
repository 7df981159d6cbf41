"""Hostile clients against the public port: every probe goes through HAProxy, as an attacker's would.

The session's shared cluster (``tests/shared_cluster.py``: ``python launch.py``, real HAProxy, sidecar,
two stand-in nodes) serves the module: its body deadlines are short so that slow clients are cut off
within seconds, and a prompt with its slow marker makes a long job. After every test a good REST job
and a good ``gradio_client`` job still succeed (``still_serving``): the cluster is left as found.
A second, HAProxy-only balancer checks the defaults of a cluster exposed beyond loopback (rate limit,
per-client connections), with stand-in nodes.

Measured figures (seconds to an idle worker after a client left, a good job's time beside
slow uploaders) go to ``test-artifacts/hostile-clients.json``; they are reported, not asserted
beyond the bounds the issue sets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from balancer.config.limits import EXPOSED_RATE_LIMIT_PER_MINUTE
from balancer.config.loading import parse_cluster
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.page_events import PageEvent, stream_messages
from bench.harness.processes import REPO, Processes, free_port
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from launch import warn_if_exposed
from tests.balancer_helpers import cluster_data
from tests.helpers import record_figures
from tests.shared_cluster import BODY_DEADLINE, LISTEN_GRACE, SLOW_MARKER, STEP_CPU_SECONDS
from tests.test_haproxy_config import running_balancer
from webui.web.studio.job_page import NOT_LISTENING

ARTIFACT = REPO / "test-artifacts" / "hostile-clients.json"
LONG_JOB = Job(prompt=f"a long portrait {SLOW_MARKER}", steps=100, width=512, height=512, seed=4242)
"""Its prompt's ``SLOW_MARKER`` makes each step use at least ``STEP_CPU_SECONDS`` of CPU time (a fault the shared
cluster's workers get): it lasts 6 s or more on any CPU, longer than the grace and the tests' 4 s holds."""
SMALL_JOB = Job(prompt="studio portrait", steps=2, width=128, height=128, seed=7)
UPLOAD_PART_HEAD = (b"--xyz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n")
"""The start of a multipart/form-data upload (boundary ``xyz``) of one file, as Gradio's page sends it."""


def record(name: str, figures: dict) -> None:
    """Add measured figures to this module's test artifact (JSON)."""
    record_figures(ARTIFACT, name, figures)


@pytest.fixture(scope="module")
def cluster(shared_cluster: LaunchedCluster) -> LaunchedCluster:
    return shared_cluster


@pytest.fixture(scope="module")
def good_gradio_client(cluster: LaunchedCluster) -> Iterator[GradioApiClient]:
    """A well-behaved gradio_client, made once: one costs a second or two to make (it opens a new connection
    for each call, so it carries no connection over from one test to the next)."""
    gradio = GradioApiClient(cluster.public_url)
    yield gradio
    gradio.close()


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each cluster test, good requests still succeed (REST and gradio_client)."""
    yield
    if "cluster" not in request.fixturenames:
        return
    request.getfixturevalue("cluster").wait_all_ready(timeout=60)
    rest = RestClient(request.getfixturevalue("cluster").public_url, timeout=120)
    try:
        assert rest.generate(SMALL_JOB).seed == SMALL_JOB.seed
    finally:
        rest.close()
    assert request.getfixturevalue("good_gradio_client").generate(SMALL_JOB).seed == SMALL_JOB.seed


def busy_workers(cluster: LaunchedCluster) -> list[str]:
    """Nodes whose worker is generating now (asked directly: observation only, never an attack)."""
    busy = []
    for node in cluster.node_names:
        if httpx.get(f"{cluster.part_url(node, 'worker')}/readyz", timeout=5).json().get("busy"):
            busy.append(node)
    return busy


def assert_idle_within_2_s(cluster: LaunchedCluster, left: float, name: str) -> None:
    """Every worker is idle within 2 s of ``left`` (when the client left); the time is recorded as ``name``."""
    seconds = seconds_until_idle(cluster, left)
    record(name, {"seconds_to_idle": round(seconds, 2)})
    assert seconds <= 2.0


def seconds_until_idle(cluster: LaunchedCluster, since: float, timeout: float = 30) -> float:
    """Seconds from ``since`` until no worker is generating."""
    wait_until(lambda: not busy_workers(cluster), "every worker idle", timeout, interval=0.05)
    return time.monotonic() - since


def newest_job_id(cluster: LaunchedCluster) -> str | None:
    """The id of the newest job the cluster's jobs service recorded, if any (asked directly: observation only)."""
    jobs = httpx.get(f"{cluster.jobs_url}/v1/jobs?limit=1", headers=cluster.internal_headers, timeout=10)
    found = jobs.raise_for_status().json()["jobs"]
    return found[0]["id"] if found else None


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> socket.socket:
    """A connection to 127.0.0.1:``port`` that has sent ``head`` and ``body`` (and nothing else yet)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head + body)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer on ``sock`` (read until the server closes or sends it all)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {name.lower(): value for name, value in headers.items()}
    length = int(headers.get("content-length", "-1"))
    while length >= 0 and len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def secret_file(cluster: LaunchedCluster) -> tuple[Path, str]:
    """A file only the server may read, with content that cannot appear by chance."""
    token = f"secret-{os.urandom(8).hex()}"
    path = cluster.run_dir / "operator-secret.txt"
    path.write_text(token)
    return path, token


def files_containing(roots: list[Path], token: str) -> list[Path]:
    """Files below ``roots`` whose content contains ``token`` (the Gradio caches of the web fronts)."""
    found = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            try:
                if path.is_file() and not path.is_symlink() and token.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def web_log_sizes(cluster: LaunchedCluster) -> dict[Path, int]:
    """Bytes each web front's log holds now."""
    return {path: path.stat().st_size for path in (cluster.run_dir / "logs").glob("*web*.log")}


def web_logs(cluster: LaunchedCluster, since: dict[Path, int] | None = None) -> str:
    """What the web fronts logged (after the sizes ``since``, when given)."""
    texts = []
    for path in web_log_sizes(cluster):
        with path.open("rb") as log:
            log.seek((since or {}).get(path, 0))
            texts.append(log.read().decode(errors="replace"))
    return "".join(texts)


def gradio_caches(cluster: LaunchedCluster) -> list[Path]:
    """Where the web fronts keep Gradio's files: their private dirs, or the shared default."""
    return [cluster.run_dir / "gradio", Path(os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio"))]


# --- 1. no server file can be read ------------------------------------------------------------


def join_and_follow(page: BrowserProtocolClient, fn_index: int, data: list, trigger_id: int | None = None) -> list:
    """Send one event over Gradio's queue protocol, as raw HTTP (no client-side file upload); its messages."""
    body = {"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": trigger_id,
            "session_hash": page.session_hash}
    joined = page.http.post("/gradio_api/queue/join", json=body)
    assert joined.status_code == 200
    with page.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": page.session_hash}) as stream:
        return list(stream_messages(stream, joined.json()["event_id"]))


def file_reference(path: Path) -> dict:
    """A Gradio ``FileData`` value naming ``path`` on the server."""
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def assert_refused_without_a_copy(messages: list, path: Path, token: str, cluster: LaunchedCluster) -> None:
    completed = next(m for m in messages if m.get("msg") == "process_completed")
    assert not completed["success"]
    assert str(path) not in json.dumps(messages) and "/tmp" not in json.dumps(messages)
    assert not files_containing(gradio_caches(cluster), token)


def test_api_cannot_name_a_server_file_as_an_input(cluster: LaunchedCluster) -> None:
    # gradio_client would upload a local file it is given; an attacker sends the reference as is.
    path, token = secret_file(cluster)
    page = BrowserProtocolClient(cluster.public_url)
    try:
        config = page.http.get("/config").json()
        retouch = next(d for d in config["dependencies"] if d.get("api_name") == "retouch")
        messages = join_and_follow(page, retouch["id"], [file_reference(path), "x", 0.5, "", None, None, -1, 1.0, 1])
        for node in cluster.node_names:  # and the original path is not served either
            response = page.http.get(f"/gradio_api/file={path}", cookies={"PORTRAIT_NODE": node})
            assert response.status_code in (403, 404) and token not in response.text
    finally:
        page.close()
    assert_refused_without_a_copy(messages, path, token, cluster)


def test_page_event_cannot_name_a_server_file_as_a_photo(cluster: LaunchedCluster) -> None:
    path, token = secret_file(cluster)
    page = BrowserProtocolClient(cluster.public_url)
    try:
        event = PageEvent.find(page.http.get("/config").json(), "retouch-button")
        values = {"retouch-image": file_reference(path), "prompt": "x", "strength": 0.5, "steps": 2, "seed": 1,
                  "seed-random": False}
        messages = join_and_follow(page, event.fn_index, event.payload(values), event.trigger_id)
    finally:
        page.close()
    assert_refused_without_a_copy(messages, path, token, cluster)


# --- 2. a job whose client left stops -----------------------------------------------------------


def test_rest_client_leaving_frees_its_worker_within_2_s(cluster: LaunchedCluster) -> None:
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{cluster.public_url}/generate", json=LONG_JOB.rest_body(), timeout=1.5)
    assert_idle_within_2_s(cluster, time.monotonic(), "rest_client_left")


def test_a_page_that_leaves_keeps_its_job_and_its_cancel_frees_the_worker_within_2_s(cluster: LaunchedCluster) -> None:
    page = BrowserProtocolClient(cluster.public_url)
    kept = page.leave_once_running(LONG_JOB)  # once a worker has reported a denoising step
    time.sleep(LISTEN_GRACE + 1.0)
    assert busy_workers(cluster), "the page's job stopped when the page left"  # it outlives the page (jobs)
    again = BrowserProtocolClient(cluster.public_url)  # the page opened again: its kept job, Cancel
    try:
        again.click("cancel", kept)
        assert_idle_within_2_s(cluster, time.monotonic(), "page_canceled")
    finally:
        again.close()


def test_gradio_client_process_dying_frees_its_worker_within_2_s(cluster: LaunchedCluster) -> None:
    script = (
        "import sys\nfrom gradio_client import Client\n"
        f"Client(sys.argv[1], verbose=False).predict(prompt={LONG_JOB.prompt!r}, steps={LONG_JOB.steps}, "
        f"width={LONG_JOB.width}, height={LONG_JOB.height}, seed=1, api_name='/generate')\n"
    )
    with Processes("leaving-client") as processes:
        proc = processes.start(["python", "-c", script, cluster.public_url], log_name="leaving-gradio-client")
        wait_until(lambda: busy_workers(cluster), "the client's job running", timeout=60, interval=0.05)
        time.sleep(0.5)  # its event stream is open (a client that never opens one: the next test)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert_idle_within_2_s(cluster, time.monotonic(), "gradio_client_killed")


def test_a_client_that_never_listens_gets_no_job(cluster: LaunchedCluster) -> None:
    before = newest_job_id(cluster)
    page = BrowserProtocolClient(cluster.public_url)
    try:
        event_id = page.join(LONG_JOB)  # and opens the event stream only after the grace
        time.sleep(LISTEN_GRACE + 2.0)
        assert not busy_workers(cluster)
        assert newest_job_id(cluster) == before, "a job was recorded for a client that never listened"
        shown = page.outcome(event_id)  # a slow device's page, late: it is told, not left waiting
        assert shown["error"]["visible"] and shown["error"]["value"] == NOT_LISTENING, shown
    finally:
        page.close()


def test_the_curl_style_call_api_keeps_a_job_longer_than_the_grace(cluster: LaunchedCluster) -> None:
    # Gradio's REST-ish API: POST /gradio_api/call/<api> gives an event id, GET .../<event id>
    # streams the result. That stream counts as listening, so a job longer than the grace survives.
    # The client keeps HAProxy's node cookie (curl -c/-b) so both requests reach the same web front.
    steps = int(2 * LISTEN_GRACE / STEP_CPU_SECONDS)  # at least twice the grace on any CPU
    data = [LONG_JOB.prompt, "", steps, None, 128, 128, 5, 1.0, 1]
    with httpx.Client(base_url=f"{cluster.public_url}/gradio_api/call/generate", timeout=120) as client:
        event_id = client.post("", json={"data": data}).json()["event_id"]
        started = time.monotonic()
        with client.stream("GET", f"/{event_id}") as stream:
            events = [line for line in stream.iter_lines() if line.startswith("event:")]
    assert events[-1] == "event: complete", events
    assert time.monotonic() - started > LISTEN_GRACE  # it outlived the grace: the stream was counted


def test_a_job_abandoned_in_the_queue_never_runs(cluster: LaunchedCluster) -> None:
    abandoned = Job(prompt="abandoned in the queue", steps=2, width=128, height=128, seed=918273)
    holders = [threading.Thread(target=_leave_after, args=(cluster, LONG_JOB, 4.0)) for _ in cluster.node_names]
    for holder in holders:
        holder.start()
    wait_until(lambda: len(busy_workers(cluster)) == len(cluster.node_names), "both workers busy", 30, 0.05)
    _leave_after(cluster, abandoned, 1.0)  # queued behind the two long jobs, then gone
    for holder in holders:
        holder.join(timeout=30)
    seconds_until_idle(cluster, time.monotonic())
    time.sleep(1.0)  # a wrongly dispatched job would have reached a worker by now
    logs = "".join(path.read_text(errors="replace") for path in (cluster.run_dir / "logs").glob("*worker*.log"))
    assert f'"seed": {abandoned.seed}' not in logs
    assert f'"seed": {LONG_JOB.seed}' in logs  # the log does record seeds: the check above can fail


def _leave_after(cluster: LaunchedCluster, job: Job, seconds: float) -> None:
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{cluster.public_url}/generate", json=job.rest_body(), timeout=seconds)


# --- 3. slow uploaders hold no worker -----------------------------------------------------------


def test_slow_uploaders_hold_no_worker_and_get_408(cluster: LaunchedCluster) -> None:
    port = cluster.spec.public.port
    declared = 1_500_000  # under the REST cap: HAProxy waits for it, the worker never sees it
    head = (f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    slow = [raw_request(port, head, b"{" + b" " * 1_000_000) for _ in range(2)]
    chunked_head = (f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n\r\n"
                    ).encode()
    slow.append(raw_request(port, chunked_head, b"10\r\n{\"prompt\": \"x\", \r\n"))
    trickle = [b" ", b" ", b"1\r\n \r\n"]  # one more byte each, in each one's framing
    started = time.monotonic()
    try:
        reply = RestClient(cluster.public_url, timeout=60).generate(SMALL_JOB)
        good_job_seconds = time.monotonic() - started
        assert good_job_seconds < BODY_DEADLINE, "a good job waited behind the slow uploaders"
        assert reply.seed == SMALL_JOB.seed
        for sock, more in zip(slow, trickle, strict=True):
            sock.sendall(more)
        answers = [read_answer(sock) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    cut_after = time.monotonic() - started
    record("slow_uploaders", {"good_job_seconds": round(good_job_seconds, 2), "cut_after": round(cut_after, 2)})
    for status, headers, body in answers:
        assert status == 408 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"] == "request_timeout"
    assert cut_after < BODY_DEADLINE + 3


def test_slow_upload_to_a_web_front_is_cut_off_with_408(cluster: LaunchedCluster) -> None:
    port = cluster.spec.public.port
    declared = 8 * 1024 * 1024  # more than HAProxy buffers: streams to a web front, which bounds it
    head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {declared}\r\n\r\n").encode()
    sock = raw_request(port, head, UPLOAD_PART_HEAD + b"a" * 3_000_000)
    started = time.monotonic()
    try:
        RestClient(cluster.public_url, timeout=60).generate(SMALL_JOB)
        status, headers, body = read_answer(sock)
    finally:
        sock.close()
    assert status == 408 and json.loads(body)["error"] == "request_timeout"
    assert time.monotonic() - started < BODY_DEADLINE + 3


# --- 4. body caps count real bytes ----------------------------------------------------------------


def test_chunked_upload_over_the_cap_is_refused_and_not_kept(cluster: LaunchedCluster) -> None:
    cap = cluster.spec.limits.max_body_bytes
    marker = os.urandom(16).hex().encode()

    def chunks() -> Iterator[bytes]:
        yield UPLOAD_PART_HEAD
        for _ in range(cap // (1024 * 1024) + 2):
            yield marker + b"b" * (1024 * 1024 - len(marker))

    response = httpx.post(f"{cluster.public_url}/gradio_api/upload", content=chunks(), timeout=60,
                          headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"
    assert not files_containing(gradio_caches(cluster), marker.decode())


def test_rest_bodies_over_the_buffer_are_refused_chunked_or_not(cluster: LaunchedCluster) -> None:
    cap = cluster.spec.limits.rest_body_bytes
    big = {"prompt": "x", "init_image": "A" * (cap + 10)}
    declared = httpx.post(f"{cluster.public_url}/generate", json=big, timeout=30)
    chunked = httpx.post(f"{cluster.public_url}/generate", content=iter([json.dumps(big).encode()]), timeout=30)
    for response in (declared, chunked):
        assert response.status_code == 413 and response.json()["error"] == "request_too_large"
    assert str(cap) in declared.json()["detail"]


# --- 5. decompression bombs are refused before decoding --------------------------------------------


def test_decompression_bomb_is_refused_by_the_web_front(cluster: LaunchedCluster, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 300_000
    before = {node: psutil.Process(cluster.pid(node, "web")).memory_info().rss for node in cluster.node_names}
    client = Client(cluster.public_url, verbose=False)
    try:
        with pytest.raises(Exception) as refused:
            client.predict(handle_file(str(bomb)), "x", 0.5, api_name="/retouch")
    finally:
        client.close()
    assert "pixels" in str(refused.value), str(refused.value)
    grown = {node: psutil.Process(cluster.pid(node, "web")).memory_info().rss - rss for node, rss in before.items()}
    record("decompression_bomb", {"web_rss_growth_mib": {n: round(g / 2**20, 1) for n, g in grown.items()}})
    assert max(grown.values()) < 200 * 2**20


# --- 6. cross-site requests cannot start jobs ----------------------------------------------------


def test_cross_site_requests_cannot_start_jobs(cluster: LaunchedCluster) -> None:
    url = cluster.public_url
    query = {"prompt": "x", "steps": 1, "width": 64, "height": 64}
    forged = [
        httpx.get(f"{url}/generate", params=query, headers={"Sec-Fetch-Site": "cross-site", "Accept": "image/*"}),
        httpx.post(f"{url}/generate", json=query, headers={"Origin": "https://evil.example"}),
        httpx.post(f"{url}/gradio_api/queue/join", json={"session_hash": "s"}, headers={"Origin": "null"}),
        httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.txt", b"a")},
                   headers={"Sec-Fetch-Site": "same-site"}),
    ]
    for response in forged:
        assert response.status_code == 403 and response.json()["error"] == "cross_site_request"
    browser = httpx.get(f"{url}/generate", params=query, headers={"Sec-Fetch-Site": "cross-site",
                                                                   "Accept": "text/html"})
    assert browser.status_code == 403 and "<h1>" in browser.text
    same_origin = httpx.post(f"{url}/generate", json=SMALL_JOB.rest_body(), timeout=60,
                             headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
    plain = httpx.get(f"{url}/generate", params={**query, "seed": 3}, timeout=60)
    assert same_origin.status_code == 200 and plain.status_code == 200


# --- 7. headers and identity ---------------------------------------------------------------------


def test_huge_headers_are_refused(cluster: LaunchedCluster) -> None:
    response = httpx.get(f"{cluster.public_url}/", headers={"X-Padding": "a" * 200_000})
    assert response.status_code == 431 and response.json()["error"] == "headers_too_large"


def test_forged_forwarded_for_is_replaced(cluster: LaunchedCluster) -> None:
    marker = f"/probe-{os.urandom(6).hex()}"
    httpx.get(f"{cluster.public_url}{marker}", headers={"X-Forwarded-For": "203.0.113.9"})
    logs = web_logs(cluster)
    line = next(line for line in logs.splitlines() if marker in line)
    assert "203.0.113.9" not in line and "127.0.0.1" in line


def test_host_and_forwarded_host_cannot_steer_the_page(cluster: LaunchedCluster) -> None:
    url = cluster.public_url
    foreign = httpx.get(f"{url}/config", headers={"Host": "evil.example"})
    assert foreign.status_code == 421 and foreign.json()["error"] == "unknown_host"
    config = httpx.get(f"{url}/config", headers={"X-Forwarded-Host": "evil.example"}).json()
    assert "evil.example" not in json.dumps(config)
    assert config["root"].startswith(url)


# --- 8. HAProxy's own answers ----------------------------------------------------------------------


def test_slow_headers_and_bodies_are_cut_off_with_408(cluster: LaunchedCluster) -> None:
    port = cluster.spec.public.port
    headers_only = raw_request(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    half_body = raw_request(port, b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    started = time.monotonic()
    try:
        (header_status, _, _), (body_status, body_headers, body) = read_answer(headers_only), read_answer(half_body)
    finally:
        headers_only.close()
        half_body.close()
    assert time.monotonic() - started < BODY_DEADLINE + 3
    # Incomplete headers get HAProxy 2.8's built-in page (its parser ignores custom ones before 3.2).
    assert header_status == 408
    assert body_status == 408 and body_headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "request_timeout"


def test_public_probes_reveal_nothing_inside(cluster: LaunchedCluster) -> None:
    url = cluster.public_url
    assert httpx.get(f"{url}/readyz").json() == {"ready": True}
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/metrics").status_code == 404
    inside = re.compile(r"127\.0\.0\.1:\d+|/tmp/|lora|cuda|cpu", re.IGNORECASE)
    for path in ("/readyz", "/healthz", "/metrics"):
        assert not inside.search(httpx.get(f"{url}{path}").text)


# --- 10. errors are answers, not tracebacks -------------------------------------------------------


def test_malformed_gradio_requests_get_json_4xx_and_no_traceback(cluster: LaunchedCluster) -> None:
    url = cluster.public_url
    logged_before = web_log_sizes(cluster)
    bad_index = httpx.post(f"{url}/gradio_api/queue/join", json={"data": [], "fn_index": 999, "session_hash": "s"})
    not_object = httpx.post(f"{url}/gradio_api/queue/join", json=[1, 2])
    not_file = httpx.post(f"{url}/gradio_api/upload", files={"files": (None, b"plain text")})
    assert (bad_index.status_code, bad_index.json()["error"]) == (422, "invalid_request")
    assert (not_object.status_code, not_object.json()["error"]) == (422, "invalid_json")
    assert (not_file.status_code, not_file.json()["error"]) == (400, "invalid_upload")
    port = cluster.spec.public.port
    head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 5000000\r\n\r\n").encode()
    sock = raw_request(port, head, UPLOAD_PART_HEAD + b"a" * 2_500_000)
    time.sleep(0.5)
    sock.close()  # gone mid-body
    time.sleep(1.0)
    logs = web_logs(cluster, since=logged_before)
    assert "Traceback" not in logs
    assert "499 client_gone" in logs


# --- 8. defaults when exposed (HAProxy alone, stand-in nodes) -------------------------------------


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory):
    """HAProxy listening on every interface (defaults for an exposed site), tested over loopback only."""
    data = cluster_data(tmp_path_factory.mktemp("exposed"), ["web1"], ["w1"])
    data["public"] = {"host": "0.0.0.0", "port": free_port()}
    with running_balancer(data) as running:
        running.public = f"http://127.0.0.1:{running.spec.public.port}"
        yield running


def test_exposed_site_limits_generations_per_client_by_default(exposed) -> None:
    rate = exposed.spec.rate_limit_per_minute
    assert rate == EXPOSED_RATE_LIMIT_PER_MINUTE == 120  # an office behind one NAT address
    with httpx.Client(base_url=exposed.public) as client:
        statuses = [client.post("/generate", json={"prompt": "x"}).status_code for _ in range(rate + 1)]
    assert statuses[:rate] == [200] * rate and statuses[rate] == 429


def test_exposed_site_caps_connections_per_client_by_default(exposed) -> None:
    cap = exposed.spec.max_client_connections
    assert cap == 32
    port = exposed.spec.public.port
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    held = []
    try:
        for _ in range(cap):  # kept open (keep-alive) once answered
            held.append(raw_request(port, request))
            assert read_answer(held[-1])[0] == 200
        held.append(raw_request(port, request))
        status, headers, body = read_answer(held[-1])
    finally:
        for sock in held:
            sock.close()
    assert status == 429 and json.loads(body)["error"] == "too_many_connections"
    assert headers["retry-after"] == "5"


def test_forged_forwarded_for_never_reaches_a_node(exposed) -> None:
    echoed = httpx.get(f"{exposed.public}/", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.1",
                                                      "X-Forwarded-Host": "evil.example", "Forwarded": "for=1.2.3.4"})
    headers = {name.lower(): value for name, value in echoed.json()["headers"].items()}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "x-forwarded-host" not in headers and "forwarded" not in headers


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_launch_warns_when_the_site_is_exposed_without_a_password(host: str, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    spec = parse_cluster({"public": {"host": host, "port": free_port()}, "run_dir": str(tmp_path)})
    with caplog.at_level("WARNING", logger="launch"):
        warn_if_exposed(spec)
    if host == "127.0.0.1":
        assert caplog.text == ""  # loopback only: nothing to warn about
    else:
        assert f"{EXPOSED_RATE_LIMIT_PER_MINUTE} generations a minute and 32 connections" in caplog.text
        assert "has no password" in caplog.text and "plain HTTP" in caplog.text
