"""A real Prometheus (Debian's ``prometheus``, started here on a free port) scrapes a small stand-in cluster
(``launch.py``: HAProxy, the sidecar, one node, the jobs service) with the shipped scrape config example (pointed
at its ports) and rules (``assets/prometheus/alerts.yml``): every target is up, every metric the rules read is
there, and a worker SIGKILLed by its PID (the sidecar set to call one death a crash loop, so it stays down) puts
``PortraitPartCrashLooping`` and ``PortraitNoWorkerReady`` into Prometheus's own /api/v1/alerts, each within its
``for:`` and two scrape intervals (polled with a bound, nothing timed). Every expression of the Grafana dashboard
(assets/grafana/portrait-ha.json) is answered and every metric it reads is there."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import REPO, Processes, free_port
from bench.harness.waiting import wait_http, wait_until
from tests.suite_cluster import suite_options
from tests.test_grafana_dashboard import expressions as dashboard_expressions
from tests.test_grafana_dashboard import metric_name
from tests.test_grafana_dashboard import metric_names as dashboard_metrics

RULES, EXAMPLE = REPO / "assets/prometheus/alerts.yml", REPO / "assets/prometheus/prometheus.example.yml"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is missing: apt-get install "
                                "prometheus (scripts/setup.sh --dev does it)")

SCRAPE_S = 1
"""Scrape and rule evaluation interval here (a real deployment: 15 s)."""
NEEDS_A_FEATURE = {
    "portrait_gpu_temperature_celsius": "a GPU (NVML)",
    "portrait_gpu_memory_used_bytes": "a GPU (NVML)",
    "portrait_gpu_memory_total_bytes": "a GPU (NVML)",
    "portrait_gpu_xid_errors_total": "a GPU that takes NVML's XID events",
    "portrait_gpu_last_xid": "a GPU's first XID error",
    "portrait_sidecar_certificate_expiry_timestamp_seconds": "the cluster file's tls section",
    "portrait_sidecar_vrrp_state": "a floating address (keepalived)",
}
"""Metrics the rules or the dashboard read that a stand-in cluster on one host cannot have, and what brings them."""


def rule_metrics() -> set[str]:
    """Every metric name an alert rule reads."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
    return set(re.findall(r"\b(?:haproxy|portrait)_[a-z_]+\b", exprs)) | {"up"}


def scrape_config(cluster: LaunchedCluster, password_file: Path) -> dict:
    """The shipped example (assets/prometheus/prometheus.example.yml) pointed at this cluster: its ports, the
    shipped rules, the stats password in ``password_file``, 1 s intervals."""
    config = yaml.safe_load(EXAMPLE.read_text())
    spec = cluster.spec
    targets = {"portrait-haproxy": f"127.0.0.1:{spec.stats.port}", "portrait-sidecar": cluster.sidecar_url,
               "portrait-jobs": cluster.jobs_url, "portrait-worker": cluster.part_url("node1", "worker")}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]].removeprefix("http://")]}]
        if "basic_auth" in job:
            job["basic_auth"] = {"username": spec.stats.user, "password_file": str(password_file)}
    config["global"] = {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"}
    config["rule_files"] = [str(RULES)]
    return config


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = suite_options(model="standin:0.3", nodes=1, sidecar={"crash_loop_deaths": 1})
    with LaunchedCluster(options, name="prometheus") as launched:
        launched.wait_jobs_ready()
        yield launched


@pytest.fixture(scope="module")
def prometheus(cluster: LaunchedCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    password = folder / "stats-password"
    password.write_text(cluster.spec.stats.password.get_secret_value())
    os.chmod(password, 0o600)
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(cluster, password)))
    url = f"http://127.0.0.1:{free_port()}"
    with Processes("prometheus") as processes:
        proc = processes.start([PROMETHEUS or "prometheus", f"--config.file={config}",
                                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address={url[7:]}"],
                               log_name="prometheus")
        wait_http(f"{url}/-/ready", timeout=30, proc=proc)
        yield url


def api(url: str, path: str, **params: str) -> dict:
    answer = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]


def test_every_target_is_up_and_every_metric_the_rules_read_is_there(prometheus: str) -> None:
    def all_up() -> list[dict] | None:
        targets = api(prometheus, "targets")["activeTargets"]
        return targets if targets and all(target["health"] == "up" for target in targets) else None

    targets = wait_until(all_up, "every target up", timeout=10 * SCRAPE_S, interval=0.2)
    assert {target["labels"]["job"] for target in targets} == {"portrait-haproxy", "portrait-sidecar",
                                                                "portrait-jobs", "portrait-worker"}
    names = set(api(prometheus, "label/__name__/values"))
    assert rule_metrics() - set(NEEDS_A_FEATURE) - names == set()


def value(prometheus: str, query: str) -> float | None:
    """The one value ``query`` has in Prometheus now (None while it has none)."""
    result = api(prometheus, "query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def test_a_job_is_counted_with_its_wait(cluster: LaunchedCluster, prometheus: str) -> None:
    job = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 4}
    answer = httpx.post(f"{cluster.public_url}/v1/jobs", json=job, headers={"Prefer": "wait=30"}, timeout=40)
    assert answer.status_code == 201 and answer.json()["status"] == "succeeded", answer.text
    counted = ('sum(portrait_jobs_finished_total{status="succeeded"}) == 1'
               ' and sum(portrait_jobs_queue_wait_seconds_count) == 1')
    assert wait_until(lambda: value(prometheus, counted), "the job counted", timeout=5 * SCRAPE_S + 5, interval=0.2)


def test_every_dashboard_expression_answers_on_the_cluster(prometheus: str) -> None:
    """After a job (the test above): every metric the Grafana dashboard reads is scraped (those that need a feature
    apart) and each of its expressions is a query Prometheus answers."""
    names = {metric_name(name) for name in api(prometheus, "label/__name__/values")}
    assert dashboard_metrics() - set(NEEDS_A_FEATURE) - names == set()
    for expr in dashboard_expressions():
        assert isinstance(api(prometheus, "query", query=expr)["result"], list), expr
    images = 'sum(portrait_jobs_account_images_total{account="anonymous"})'
    assert value(prometheus, images) == 1  # the job above: one image, no API key


def alerts(prometheus: str) -> dict[str, str]:
    """Alert name -> its state (pending or firing), as Prometheus has it now."""
    return {alert["labels"]["alertname"]: alert["state"] for alert in api(prometheus, "alerts")["alerts"]}


def test_a_killed_worker_raises_its_alerts(cluster: LaunchedCluster, prometheus: str) -> None:
    assert "PortraitPartCrashLooping" not in alerts(prometheus)
    os.kill(cluster.pid("node1", "worker"), signal.SIGKILL)
    wait_until(lambda: cluster.part_status("node1", "worker")["crash_looped"], "the sidecar sees a crash loop",
               timeout=30, interval=0.1)
    # for: 0 (crash loop) and 1 m (no worker): each within its for: and two scrape intervals
    looping = wait_until(lambda: alerts(prometheus).get("PortraitPartCrashLooping"), "PortraitPartCrashLooping",
                         timeout=2 * SCRAPE_S + 5, interval=0.2)
    assert looping == "firing"
    none_ready = wait_until(lambda: alerts(prometheus).get("PortraitNoWorkerReady"), "PortraitNoWorkerReady",
                            timeout=2 * SCRAPE_S + 5, interval=0.2)
    assert none_ready in {"pending", "firing"}
