"""One id through every hop (issue 24): HAProxy gives each request an id, logs it and passes it on; the web front,
the jobs service and the worker put it (and a job's id) in every log line of that request's work, so that one grep
follows a job across processes. A client's own ``X-Request-ID`` never reaches a log.

One stand-in cluster (1 node, 0.3 s a job) with JSON logs (``PORTRAIT_LOG_FORMAT=json``): every id is looked for in
the run dir's logs, and the lines that carry it must be JSON objects naming it. The text form is checked in-process.
Run under the cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_trace_ids.py``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from gradio_client import Client

from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.waiting import wait_until
from tests.suite_cluster import suite_options
from webui import trace
from webui.log_setup import LOG_FORMAT_ENV, TEXT_FORMAT, TraceFilter

JOB = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 4}
WAIT = 60.0
FORGED = "forged-by-a-client-7"
"""An id of a valid shape that a client sends: the public entry must not take it."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = suite_options(model="standin:0.3", nodes=1, start_timeout=120, env={LOG_FORMAT_ENV: "json"})
    with LaunchedCluster(options, name="trace-ids") as launched:
        launched.wait_jobs_ready()
        yield launched


def logs(cluster: LaunchedCluster) -> dict[str, str]:
    """Every log of the run: HAProxy's, the jobs service's, each node part's."""
    files = [cluster.run_dir / "haproxy.log", *sorted((cluster.run_dir / "logs").glob("*.log"))]
    return {path.name: path.read_text(errors="replace") for path in files if path.exists()}


def node_log(cluster: LaunchedCluster, part: str) -> str:
    return f"{cluster.node_names[0]}-{part}.log"


def logs_naming(cluster: LaunchedCluster, value: str, *names: str) -> dict[str, str]:
    """The logs among ``names`` that name ``value`` (waited for until all do: a line may come after the answer)."""
    def found() -> dict[str, str] | None:
        texts = logs(cluster)
        return texts if all(value in texts.get(name, "") for name in names) else None

    try:
        return wait_until(found, f"{value} in {names}", 10.0, interval=0.1)
    except TimeoutError:
        texts = logs(cluster)
        missing = [name for name in names if value not in texts.get(name, "")]
        tails = "\n".join(f"--- {name}:\n" + "\n".join(texts.get(name, "").splitlines()[-15:]) for name in missing)
        pytest.fail(f"{value} is missing from {missing}; their last lines:\n{tails}")


def json_lines(text: str, value: str) -> list[dict[str, Any]]:
    """The lines of a node log naming ``value``, each parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in text.splitlines() if value in line]


def test_a_rest_job_is_one_id_in_haproxys_and_the_workers_log(cluster: LaunchedCluster) -> None:
    answer = httpx.post(cluster.public_url + "/generate", json=JOB, headers={"X-Request-ID": FORGED}, timeout=WAIT)
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    assert request_id != FORGED and trace.valid_id(request_id), request_id
    job = answer.headers["x-job-id"]
    logs_naming(cluster, f'{{{job}}} POST "/generate" {request_id}', "haproxy.log")  # the public line, once logged
    texts = logs_naming(cluster, request_id, "haproxy.log", node_log(cluster, "worker"))  # (the record's came first)
    haproxy = [line for line in texts["haproxy.log"].splitlines() if request_id in line]
    public = [line for line in haproxy if " public " in line]
    assert len(public) == 1 and 'POST "/generate"' in public[0] and f"{{{job}}}" in public[0], haproxy
    # The worker recorded its job through the worker queue under the same id (webui.worker.job_record).
    assert any(" worker_queue " in line and 'POST "/v1/worker-jobs"' in line for line in haproxy), haproxy
    worker = json_lines(texts[node_log(cluster, "worker")], request_id)
    assert worker and all(line["request_id"] == request_id for line in worker), worker
    assert {"time", "level", "logger", "message", "request_id", "job_id"} <= set(worker[0]), worker[0]
    assert not any(FORGED in text for text in logs(cluster).values())


def test_a_v1_job_is_followed_by_its_job_id_through_every_process(cluster: LaunchedCluster) -> None:
    with httpx.Client(base_url=cluster.public_url, timeout=WAIT) as http:
        accepted = http.post("/v1/jobs", json=JOB, headers={"X-Request-ID": FORGED})
        assert accepted.status_code == 202, accepted.text
        job_id, request_id = accepted.json()["id"], accepted.headers["x-request-id"]
        assert accepted.headers["x-job-id"] == job_id and request_id != FORGED
        wait_until(lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded", "job done", WAIT, 0.1)
    # The submission: HAProxy's line names its request and job, the jobs service's acceptance both.
    texts = logs_naming(cluster, request_id, "haproxy.log", "jobs.log")
    submitted = [line for line in texts["haproxy.log"].splitlines() if request_id in line and " public " in line]
    assert len(submitted) == 1 and f"{{{job_id}}}" in submitted[0] and 'POST "/v1/jobs"' in submitted[0], submitted
    accepted_lines = [line for line in json_lines(texts["jobs.log"], request_id) if line["job_id"] == job_id]
    assert any("accepted" in line["message"] for line in accepted_lines), accepted_lines
    # The run: the dispatcher's lines, HAProxy's worker-queue line and the worker's lines all name the job.
    texts = logs_naming(cluster, job_id, "haproxy.log", "jobs.log", node_log(cluster, "worker"))
    run = [line for line in json_lines(texts["jobs.log"], job_id) if line["request_id"] != request_id]
    claimed = next(line for line in run if line["message"].startswith(f"job {job_id}: claimed"))
    dispatch_id = claimed["request_id"]
    assert claimed["job_id"] == job_id and trace.valid_id(dispatch_id), claimed
    assert any("succeeded" in line["message"] and line["request_id"] == dispatch_id for line in run), run
    worker = json_lines(texts[node_log(cluster, "worker")], job_id)
    assert worker and all(line["job_id"] == job_id and line["request_id"] == dispatch_id for line in worker), worker
    queue_line = [line for line in texts["haproxy.log"].splitlines() if dispatch_id in line]
    assert len(queue_line) == 1 and " worker_queue " in queue_line[0] and f"{{{job_id}}}" in queue_line[0], queue_line
    assert '"/generate/stream"' in queue_line[0], queue_line
    assert not any(FORGED in text for text in logs(cluster).values())


def test_a_gradio_client_job_keeps_its_request_id_from_haproxy_to_the_jobs_service(cluster: LaunchedCluster,
                                                                                tmp_path: Path) -> None:
    """The web front runs it as a job of the jobs service (``jobs.web_fronts``, the default)."""
    client = Client(cluster.public_url, verbose=False, download_files=str(tmp_path))
    client.predict(prompt="a traced portrait", steps=4, width=64, height=64, seed=424242, api_name="/generate")
    web = node_log(cluster, "web")

    def submitted() -> dict[str, Any] | None:
        lines = json_lines(logs(cluster).get(web, ""), "submitted")
        return next((line for line in lines if line["logger"].endswith("jobs_runner")), None)

    line = wait_until(submitted, "the web front's job line", 10.0, interval=0.1)
    request_id, job_id = line["request_id"], line["message"].split()[1]
    assert trace.valid_id(request_id) and job_id.startswith("j_"), line
    texts = logs_naming(cluster, request_id, "haproxy.log", "jobs.log")
    hops = [line for line in texts["haproxy.log"].splitlines() if request_id in line]
    assert any("queue/join" in hop for hop in hops) and any('POST "/v1/jobs"' in hop for hop in hops), hops
    accepted = json_lines(texts["jobs.log"], request_id)
    assert any(line["job_id"] == job_id and "accepted" in line["message"] for line in accepted), accepted
    texts = logs_naming(cluster, job_id, web, node_log(cluster, "worker"))
    assert any(line["job_id"] == job_id and line["request_id"] == request_id for line in json_lines(texts[web], job_id))


def test_a_clients_id_is_never_written_into_a_log(cluster: LaunchedCluster) -> None:
    """Raw bytes, as an attacker would send them with a REST job: a line break inside the header, odd characters,
    two ids, a job id."""
    address = urlsplit(cluster.public_url)
    body = json.dumps(JOB).encode()
    before = {name: text.count("/generate") for name, text in logs(cluster).items()}
    attempts = [b"X-Request-ID: evil\nline: injected\r\n", b"X-Request-ID: evil line \"quoted\"\r\n",
                b"X-Request-ID: evil-one\r\nX-Request-ID: evil-two\r\n", b"X-Job-Id: evil-job\r\n"]
    for header in attempts:
        with socket.create_connection((address.hostname, address.port), timeout=WAIT) as connection:
            connection.sendall(b"POST /generate HTTP/1.1\r\nHost: " + address.netloc.encode() + b"\r\n" + header
                               + b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                               + b"\r\nConnection: close\r\n\r\n" + body)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 ") and b"evil" not in head, head
    def logged() -> bool:
        texts = logs(cluster)
        return all(texts[name].count("/generate") > before.get(name, 0) for name in ("haproxy.log", worker))

    worker = node_log(cluster, "worker")
    wait_until(logged, "HAProxy's and the worker's lines", 10.0, interval=0.1)
    for name, text in logs(cluster).items():
        assert "evil" not in text and "injected" not in text, name


def test_text_log_lines_name_the_bound_ids(caplog: pytest.LogCaptureFixture) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(TraceFilter())
    record = logging.LogRecord("jobs.dispatch", logging.INFO, __file__, 1, "job %s claimed", ("j_1",), None)
    with trace.bound("req-1", "j_1"):
        bound_line = handler.format(record) if handler.filter(record) else ""
    assert bound_line.endswith("INFO jobs.dispatch [request_id=req-1 job_id=j_1]: job j_1 claimed"), bound_line
    handler.filter(record)
    assert handler.format(record).endswith("INFO jobs.dispatch: job j_1 claimed")
    assert trace.headers_ids({"X-Request-ID": "evil\nline"})[0] != "evil\nline"
    assert trace.headers_ids([(b"x-request-id", b"abc-1"), (b"x-job-id", b"j_2")]) == ("abc-1", "j_2")
