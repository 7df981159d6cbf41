"""The cluster file's ``jobs`` section and what it becomes: the jobs service's command line and environment (no
password, no secret on it), a companion of a balancer's sidecar only, its entry in ``/status``, and its routes
in haproxy.cfg (checked by ``haproxy -c``). In-process: no cluster started."""

from __future__ import annotations

from pathlib import Path

import pytest

from balancer.api.status import status_document
from balancer.config.basics import ClusterConfigError
from balancer.config.jobs_service import JOBS_STORE_URL_ENV
from balancer.config.loading import parse_cluster
from balancer.haproxy.config import render_config
from balancer.haproxy.process import HAProxyProcess, validate_config, write_config
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.operations.parts import jobs_command
from balancer.sidecar import Sidecar
from bench.harness.balancer import cluster_data
from webui.contract import CLUSTER_SECRET_ENV

SECRET = "jobs-config-test-secret"


def spec_of(tmp_path: Path, workers: int = 3, **jobs: object):
    names = [f"n{index}" for index in range(workers)]
    return parse_cluster(cluster_data(tmp_path, names, names, jobs=jobs))


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_jobs_are_on_by_default_on_a_port_of_their_own(tmp_path: Path) -> None:
    defaults = parse_cluster({"run_dir": str(tmp_path)}).jobs
    assert defaults.enabled and defaults.store_url is None and defaults.dispatch_slots is None
    others = {8080, 8081, 8404, 8405, 8406, 7860, 7960, 8960}  # public, queue, stats, sidecar, host agent, nodes
    assert defaults.port not in others


@pytest.mark.parametrize(("jobs", "message"), [
    ({"store_url": "postgresql+psycopg://jobs:hunter2@db/jobs"}, JOBS_STORE_URL_ENV),
    ({"store_url": "mysql://jobs@db/jobs"}, "expected sqlite:///PATH or postgresql"),
    ({"dispatch_slots": 0}, "dispatch_slots"),
    ({"job_timeout": 0}, "job_timeout"),
    ({"port": 9, "host": "127.0.0.1", "colour": "blue"}, "colour"),
])
def test_a_bad_jobs_section_is_refused_naming_the_setting(tmp_path: Path, jobs: dict, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        spec_of(tmp_path, **jobs)


def test_the_jobs_port_may_not_clash_with_another_listener(tmp_path: Path) -> None:
    data = cluster_data(tmp_path, [], [])
    data["jobs"] = {"port": data["public"]["port"]}
    with pytest.raises(ClusterConfigError, match="jobs.port"):
        parse_cluster(data)
    data["jobs"]["enabled"] = False
    assert not parse_cluster(data).jobs.enabled  # a service that does not run claims no port


def test_the_command_has_one_slot_per_worker_and_neither_store_url_nor_secret(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, store_url="postgresql+psycopg://jobs@db/jobs", job_timeout=120, retention_days=7)
    command = jobs_command(spec)
    assert command[1:3] == ["-m", "jobs"]
    assert flag(command, "--port") == str(spec.jobs.port) and flag(command, "--run-dir") == str(spec.run_dir)
    assert flag(command, "--worker-queue-url") == spec.worker_queue.url
    assert flag(command, "--dispatch-slots") == "3"
    assert flag(command, "--job-timeout") == "120" and flag(command, "--retention-days") == "7"
    assert "--store-url" not in command and not any("postgresql" in arg for arg in command)
    assert flag(jobs_command(spec_of(tmp_path, dispatch_slots=5)), "--dispatch-slots") == "5"
    assert flag(jobs_command(spec_of(tmp_path, workers=0)), "--dispatch-slots") == "1"


def balancer_sidecar(spec, env: dict[str, str]) -> Sidecar:
    haproxy = HAProxyProcess(spec.config_path, spec.socket_path, spec.run_dir / "haproxy.log", binary="haproxy")
    return Sidecar(spec, AsyncRuntimeAPI(spec.socket_path), base_env=env, haproxy=haproxy)


def test_a_balancers_sidecar_runs_the_service_with_the_store_and_secret_in_its_environment(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, store_url="postgresql+psycopg://jobs@db/jobs")
    sidecar = balancer_sidecar(spec, {CLUSTER_SECRET_ENV: SECRET})
    [jobs] = [supervisor for supervisor in sidecar.companions if supervisor.status.part == "jobs"]
    assert (jobs.status.node, jobs.status.backend) == ("balancer", "jobs")
    child = jobs.child
    assert child.env[CLUSTER_SECRET_ENV] == SECRET and SECRET not in " ".join(child.command)
    assert child.env[JOBS_STORE_URL_ENV] == "postgresql+psycopg://jobs@db/jobs"
    assert child.log_path == spec.run_dir / "logs" / "jobs.log" and child.probe_target.endswith("/healthz")
    with_password = "postgresql+psycopg://jobs:hunter2@db/jobs"
    child = balancer_sidecar(spec, {JOBS_STORE_URL_ENV: with_password}).companions[0].child
    assert child.env[JOBS_STORE_URL_ENV] == with_password  # the environment's URL wins over the file's


def test_no_jobs_service_without_haproxy_or_when_off(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    assert Sidecar(spec, None, base_env={}).companions == []  # python -m balancer.sidecar: node parts only
    assert balancer_sidecar(spec_of(tmp_path, enabled=False), {}).companions == []


def test_status_shows_the_jobs_service_and_counts_its_crash_loop(tmp_path: Path) -> None:
    jobs = balancer_sidecar(spec_of(tmp_path), {}).companions[0].status
    jobs.crash_looped = True
    document = status_document([], 0.0, companions=[jobs])
    assert document["jobs"]["state"] == "stopped" and document["crash_looped"] == ["balancer/jobs"]
    assert document["parts"] == 0  # node parts only


def test_haproxy_routes_the_jobs_api_to_the_service_or_answers_404_when_off(tmp_path: Path) -> None:
    spec = spec_of(tmp_path)
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    assert "    use_backend jobs if is_jobs\n" in text
    assert f"    server local 127.0.0.1:{spec.jobs.port}  #" in text
    assert "http-request set-var(txn.job) bool(1) if METH_POST { var(txn.path) -m str /v1/jobs }" in text
    off = spec_of(tmp_path, enabled=False)
    text = render_config(off)
    validate_config(write_config(text, off.config_path))
    assert "backend jobs" not in text and "use_backend jobs" not in text
    assert "status 404" in next(line for line in text.splitlines() if line.endswith("if is_jobs !wants_html"))


def test_rest_goes_through_the_jobs_service_when_asked_or_no_worker_is_up(tmp_path: Path) -> None:
    plain_spec = spec_of(tmp_path)
    plain = render_config(plain_spec)
    validate_config(write_config(plain, plain_spec.config_path))
    assert "    use_backend workers if is_rest\n" in plain
    # No worker up (counted in worker_probes: the workers' backup, the jobs service, counts in nbsrv(workers)): the
    # jobs service holds the job until one is ready; only with neither up is REST told at once.
    assert "    use_backend jobs if is_rest { nbsrv(worker_probes) eq 0 }\n" in plain
    assert plain.index("use_backend jobs if is_rest") < plain.index("use_backend workers if is_rest")
    assert "is_rest { nbsrv(worker_probes) eq 0 } { nbsrv(jobs) eq 0 }" in plain
    workers = plain[plain.index("\nbackend workers"):plain.index("\nbackend worker_probes")]
    assert "    server jobs:hold 127.0.0.1:8407 backup" in workers  # a replay with no worker left is held there
    assert f"    retries {plain_spec.limits.retries + len(plain_spec.workers)}\n" in workers
    off = render_config(spec_of(tmp_path, enabled=False))
    assert "use_backend jobs" not in off and "is_rest { nbsrv(worker_probes) eq 0 } !wants_html" in off
    assert "jobs:hold" not in off
    spec = spec_of(tmp_path, rest=True)
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    assert "    use_backend jobs if is_rest\n" in text and "use_backend workers if is_rest" not in text
    # No worker up is not a reason to refuse: the jobs service holds the job until one is ready.
    assert "is_rest { nbsrv(worker_probes) eq 0 }" not in text and "is_rest { nbsrv(jobs) eq 0 }" in text
    assert "jobs:hold" not in text  # the service runs every REST job itself
    limits = spec.limits
    for config in (plain, text):  # a REST job waits for a worker, then runs: silent that long; the jobs API less
        jobs_backend = config[config.index("backend jobs"):]
        assert "    timeout server 75s\n" in jobs_backend
        rest_wait = limits.queue_timeout + limits.generation_timeout + 15
        assert (f"    http-request set-timeout server {rest_wait:g}s if {{ var(txn.path) -m str /generate "
                "/generate/stream }\n") in jobs_backend
    command = jobs_command(spec)
    assert flag(command, "--queue-wait") == f"{limits.queue_timeout:g}"
    assert flag(command, "--worker-timeout") == f"{limits.generation_timeout:g}"


def test_web_fronts_run_their_jobs_through_the_worker_queue_unless_told_not_to(tmp_path: Path) -> None:
    assert "--jobs-url" not in spec_of(tmp_path, web_fronts=False).web_flags()
    spec = spec_of(tmp_path)  # on by default
    assert flag(spec.web_flags(), "--jobs-url") == spec.worker_queue_url
    text = render_config(spec)
    validate_config(write_config(text, spec.config_path))
    queue = text[text.index("frontend worker_queue"):text.index("\nbackend ", text.index("frontend worker_queue"))]
    assert "use_backend jobs if { path /v1/jobs } || { path_beg /v1/jobs/ }" in queue
    off = spec_of(tmp_path, enabled=False, web_fronts=True)
    assert "--jobs-url" not in off.web_flags() and "use_backend jobs" not in render_config(off)
