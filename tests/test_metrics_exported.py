"""The metrics the alert rules (assets/prometheus/alerts.yml) need and that no part exported before: the jobs
service's run outcomes, queue wait, webhook backlog and store filesystem (``jobs.metrics``, also through the
real app's open ``/metrics``), and the sidecar's certificate expiry (``balancer.api.cert_metrics``). In-process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from balancer.api.cert_metrics import CertificateCollector, not_after
from balancer.multihost.authority import NODE_USAGES, CertificateAuthority, Identity
from jobs.metrics import JobsMetrics
from jobs.service import build_app
from jobs.settings import JobsSettings
from jobs.store import make_engine, submit, upgrade
from jobs.store.accounts import create_account
from jobs.store.outbox import PENDING
from jobs.store.records import utc_now
from jobs.store.schema import webhook_deliveries


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text: (name, sorted labels) -> value."""
    text = text.decode() if isinstance(text, bytes) else text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_jobs_metrics_count_runs_and_read_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    metrics = JobsMetrics()
    metrics.track_store(engine)
    exported = samples(metrics.render())
    assert exported[("portrait_jobs_finished_total", (("status", "failed"),))] == 0
    assert exported[("portrait_jobs_webhook_pending_deliveries", ())] == 0
    assert exported[("portrait_jobs_webhook_oldest_due_age_seconds", ())] == 0
    assert 0 < exported[("portrait_jobs_store_filesystem_avail_bytes", ())] <= exported[
        ("portrait_jobs_store_filesystem_size_bytes", ())]

    metrics.ended("failed")
    metrics.ended("lost")  # no ending: the job's next holder counts it
    metrics.queue_wait.observe(7)
    job, _ = submit(engine, {"prompt": "a portrait"})
    now = utc_now()
    with engine.begin() as connection:
        connection.execute(insert(webhook_deliveries).values(
            id="msg_1", job_id=job.id, event="completed", url="https://example.org/hook", body="{}",
            created_at=now, status=PENDING, retried=True, next_attempt_at=now - timedelta(minutes=10)))
    exported = samples(metrics.render())
    assert exported[("portrait_jobs_finished_total", (("status", "failed"),))] == 1
    assert ("portrait_jobs_finished_total", (("status", "lost"),)) not in exported
    assert exported[("portrait_jobs_queue_wait_seconds_bucket", (("le", "10.0"),))] == 1
    assert exported[("portrait_jobs_webhook_pending_deliveries", ())] == 1
    assert exported[("portrait_jobs_webhook_oldest_due_age_seconds", ())] >= 600
    engine.dispose()


def test_account_usage_is_labelled_with_the_store_s_account_names(tmp_path: Path) -> None:
    """Accounts by name, each with its series before its first job; keyless and site-login owners fold into one
    ``anonymous`` value (the label's values are bounded by the store's accounts, not by what clients send)."""
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    studio = create_account(engine, "studio")
    create_account(engine, "idle")  # no job yet
    metrics = JobsMetrics()
    metrics.track_store(engine)
    metrics.ended("succeeded", studio.id, images=2, gpu_seconds=3.5)
    metrics.ended("failed", studio.id)
    metrics.ended("succeeded", "alice", images=1, gpu_seconds=1.0)  # a site login's job
    metrics.ended("canceled", "", images=4, gpu_seconds=0.5)  # no images counted for a canceled run
    metrics.ended("lost", studio.id, images=9)  # no ending: the next holder counts it
    metrics.accounts.refused(studio.id, "concurrency")
    exported = samples(metrics.render())

    def value(name: str, account: str, **labels: str) -> float:
        return exported[(f"portrait_jobs_account_{name}_total", tuple(sorted({"account": account, **labels}.items())))]

    assert [value("jobs", "studio", status=status) for status in ("succeeded", "failed", "canceled")] == [1, 1, 0]
    assert [value("images", name) for name in ("studio", "anonymous", "idle")] == [2, 1, 0]
    assert [value("gpu_seconds", name) for name in ("studio", "anonymous", "idle")] == [3.5, 1.5, 0]
    assert value("jobs", "anonymous", status="succeeded") == value("jobs", "anonymous", status="canceled") == 1
    assert value("refusals", "studio", reason="concurrency") == 1 and value("refusals", "idle", reason="daily") == 0
    assert {dict(labels)["account"] for name, labels in exported if name.startswith("portrait_jobs_account_")} == {
        "studio", "idle", "anonymous"}
    engine.dispose()


def test_jobs_service_metrics_need_no_cluster_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_CLUSTER_SECRET", "s3cret-for-this-test")
    with TestClient(build_app(JobsSettings(run_dir=tmp_path))) as client:
        answer = client.get("/metrics")
        refused = client.get("/v1/jobs")
    assert answer.status_code == 200, answer.text
    assert ("portrait_jobs_webhook_pending_deliveries", ()) in samples(answer.text)
    assert refused.status_code == 403  # the secret still guards everything else


def test_certificate_expiry_is_exported_per_file(tmp_path: Path) -> None:
    authority = CertificateAuthority.create("test CA")
    cert, key = authority.issue(Identity.parse("gpu1"), NODE_USAGES)
    pem = tmp_path / "gpu1.pem"
    pem.write_bytes(cert + key)
    missing = tmp_path / "gone.pem"
    registry = CollectorRegistry()
    registry.register(CertificateCollector([pem, missing]))
    exported = samples(generate_latest(registry))
    expiry = exported[("portrait_sidecar_certificate_expiry_timestamp_seconds", (("file", str(pem)),))]
    assert expiry == not_after(pem) > utc_now().timestamp() + 14 * 86400
    assert ("portrait_sidecar_certificate_expiry_timestamp_seconds", (("file", str(missing)),)) not in exported

