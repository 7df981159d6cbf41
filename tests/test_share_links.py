"""Share links and a full stop and start, through a launched cluster's public port (HAProxy, sidecar, jobs service).

One stand-in cluster (1 node, 0.3 s a job, SQLite store in its run dir) behind the site's login (basic auth) for
the module: a share link (``POST /v1/jobs/{id}/share``) shows its result without the login, in ``httpx`` and in a
fresh Chromium, until it expires; forged and altered links are refused; everything else stays behind the login.
Then ``launch.py`` is stopped and started again on the same run dir, the login turned off meanwhile (an operator's
edit of the cluster file): finished jobs' results still download, the share link made before still works (its key
is in the run dir), and jobs queued while the only worker was in maint run and succeed. The jobs service's lease is
2 s, so a job whose service stopped is taken again soon. Run under the cluster lock:
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_share_links.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from balancer.haproxy.names import WORKERS_BACKEND
from bench.harness.chromium import chromium_context
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.waiting import wait_until
from jobs.store.engine import default_url
from tests.jobs_service import accounts_cli as jobs_accounts_cli
from tests.suite_cluster import suite_options
from tests.test_haproxy_config import crypt_hash

JOB = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 4}
USER, PASSWORD = "studio", "correct horse battery staple"
WAIT = 60.0
"""Bound (seconds) on anything a test waits for."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    users = tmp_path_factory.mktemp("share-users") / "users"
    users.write_text(f"{USER}:{crypt_hash(PASSWORD)}\n")
    options = suite_options(model="standin:0.3", nodes=1, start_timeout=120,
                            sidecar={"probe_interval": 0.2, "backoff_initial": 0.2},
                            extra={"users_file": str(users)}, env={"PORTRAIT_JOBS_LEASE_SECONDS": "2"})
    with LaunchedCluster(options, name="share-links") as launched:
        launched.wait_jobs_ready()
        yield launched


def client(cluster: LaunchedCluster, login: bool) -> httpx.Client:
    return httpx.Client(base_url=cluster.public_url, auth=(USER, PASSWORD) if login else None, timeout=WAIT)


def succeeded_job(http: httpx.Client) -> tuple[dict[str, Any], str]:
    """A finished job (submitted with ``Prefer: wait``) and its image's SHA-256."""
    answer = http.post("/v1/jobs", json=JOB, headers={"Prefer": "wait=30"})
    assert answer.status_code == 201 and answer.json()["status"] == "succeeded", answer.text
    job = answer.json()
    image = http.get(job["output"][0])
    assert image.status_code == 200
    return job, hashlib.sha256(image.content).hexdigest()


def share(http: httpx.Client, job_id: str, **body: int) -> httpx.Response:
    return http.post(f"/v1/jobs/{job_id}/share", json=body or None)


def shown_in_fresh_browser(url: str) -> tuple[str, str, int]:
    """What a fresh Chromium context (no cookies, no login) shows at ``url``: the response's content type, the
    SHA-256 of its bytes, and the natural width of the image on the page (0: none shown)."""
    with sync_playwright() as playwright, chromium_context(playwright) as context:
        page = context.new_page()
        response = page.goto(url, wait_until="load")
        assert response is not None
        width = page.evaluate("() => document.images.length ? document.images[0].naturalWidth : 0")
        return response.headers["content-type"], hashlib.sha256(response.body()).hexdigest(), width


def test_a_share_link_shows_its_result_without_the_login_and_nothing_else_passes(cluster: LaunchedCluster) -> None:
    with client(cluster, login=True) as member, client(cluster, login=False) as stranger:
        job, sha = succeeded_job(member)
        assert stranger.get(job["output"][0]).status_code == 401  # the plain link stays behind the login
        assert share(stranger, job["id"]).status_code == 401  # so does making a link
        made = share(member, job["id"], expires_in=3600)
        assert made.status_code == 200, made.text
        link = made.json()["urls"][0]
        assert link.startswith("/v1/share/") and made.json()["job_id"] == job["id"]
        shown = stranger.get(link)
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert hashlib.sha256(shown.content).hexdigest() == sha and shown.headers["etag"] == f'"{sha}"'
        assert stranger.head(link).status_code == 200
        assert stranger.post(link).status_code == 401  # only reads pass the login
        assert stranger.get(f"/v1/share/%2e%2e/jobs/{job['id']}").status_code == 404  # no way around it
        assert stranger.get("/v1/jobs").status_code == 401


def accounts_cli(cluster: LaunchedCluster, *args: str) -> str:
    """``python -m jobs accounts ARGS`` on the cluster's store (its run dir), as an operator runs it; its stdout."""
    done = jobs_accounts_cli(default_url(cluster.run_dir), *args)  # in this process
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_api_key_reaches_the_jobs_api_past_the_site_login_and_nothing_else(cluster: LaunchedCluster) -> None:
    accounts_cli(cluster, "create", "booking-site")
    key = accounts_cli(cluster, "create-key", "booking-site", "--scope=generate", "--scope=history")
    bearer = {"Authorization": f"Bearer {key}"}
    with client(cluster, login=False) as app:
        made = app.post("/v1/jobs", json=JOB, headers={**bearer, "Prefer": "wait=30"})
        assert made.status_code == 201 and made.json()["status"] == "succeeded", made.text
        assert app.get(made.json()["output"][0], headers=bearer).status_code == 200
        assert app.get(f"/v1/jobs/{made.json()['id']}").status_code == 401  # without the key: the site login
        for path in ("/", "/generate", "/v1/recipes"):  # the key opens the jobs API only
            assert app.post(path, json=JOB, headers=bearer).status_code == 401, path
        for _ in range(12):  # more than the failed logins a client may make in a minute (10)
            forged = app.get("/v1/jobs", headers={"Authorization": "Bearer ph_live_forged"})
            assert forged.status_code == 401 and forged.json()["error"] == "invalid_api_key"  # the service's answer
    with client(cluster, login=True) as member:  # bad keys are no failed logins: this address is not throttled
        assert member.get("/v1/jobs").status_code == 200


def test_forged_altered_and_expired_share_links_are_refused_in_words(cluster: LaunchedCluster) -> None:
    with client(cluster, login=True) as member, client(cluster, login=False) as stranger:
        job, _ = succeeded_job(member)
        link = share(member, job["id"]).json()["urls"][0]
        job_id, index, expires, signature = link.removeprefix("/v1/share/").split(".")
        for changed in (f"{job_id}.{index}.{int(expires) + 86400}.{signature}",  # a longer life
                        f"{job_id}.1.{expires}.{signature}",  # another result
                        f"{job_id}.{index}.{expires}.{signature[:-4]}AAAA",  # another signature
                        "j_0000000000000000000000.0.9999999999.x"):
            refused = stranger.get(f"/v1/share/{changed}")
            assert refused.status_code == 403 and refused.json()["error"] == "share_link_invalid", changed
            assert "not valid" in refused.json()["detail"]
        short = share(member, job["id"], expires_in=1).json()["urls"][0]
        expired = wait_until(lambda: answer if (answer := stranger.get(short)).status_code != 200 else None,
                             "the 1 s link expired", WAIT, interval=0.2)
        assert expired.status_code == 410 and expired.json()["error"] == "share_link_expired"
        assert "expired at" in expired.json()["detail"]
        for seconds in (0, 31 * 86400):
            too = share(member, job["id"], expires_in=seconds)
            assert too.status_code == 422 and too.json()["fields"][0]["field"] == "expires_in"


@pytest.mark.browser
def test_a_share_link_opened_in_a_fresh_browser_shows_the_image(cluster: LaunchedCluster) -> None:
    with client(cluster, login=True) as member:
        job, sha = succeeded_job(member)
        link = share(member, job["id"]).json()["urls"][0]
    content_type, shown, width = shown_in_fresh_browser(cluster.public_url + link)
    assert (content_type, shown) == ("image/png", sha) and width == JOB["width"]


@dataclass
class Restart:
    """What was there before the stop, and the site after the start (now without its login)."""

    finished: dict[str, Any]
    sha: str
    link: str
    queued: list[str]
    shared_too_early: httpx.Response


@pytest.fixture(scope="module")
def restarted(cluster: LaunchedCluster) -> Restart:
    """A finished job and its share link, two jobs queued while the only worker is in maint; then launch.py is
    stopped and started again on the same run dir, with the login removed from the cluster file."""
    with client(cluster, login=True) as member:
        finished, sha = succeeded_job(member)
        link = share(member, finished["id"]).json()["urls"][0]
        cluster.runtime.set_server_state(WORKERS_BACKEND, cluster.node_names[0], "maint")
        queued = [member.post("/v1/jobs", json=JOB).json()["id"] for _ in range(2)]
        early = share(member, queued[1])
        assert {member.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in queued} <= {"starting", "processing"}
    cluster.restart(cluster.spec.model_copy(update={"users_file": None}))
    cluster.wait_jobs_ready()
    return Restart(finished, sha, link, queued, early)


def test_after_a_full_stop_and_start_results_download_and_queued_jobs_succeed(restarted: Restart,
                                                                             cluster: LaunchedCluster) -> None:
    assert restarted.shared_too_early.status_code == 409
    assert restarted.shared_too_early.json()["error"] == "not_shareable"
    with client(cluster, login=False) as anyone:
        image = anyone.get(restarted.finished["output"][0])
        assert image.status_code == 200 and hashlib.sha256(image.content).hexdigest() == restarted.sha
        assert anyone.get(restarted.link).status_code == 200  # the key survived in the run dir
        for job_id in restarted.queued:
            job = wait_until(lambda job_id=job_id: answer if (answer := anyone.get(f"/v1/jobs/{job_id}").json())[
                "status"] in ("succeeded", "failed", "canceled") else None, f"job {job_id} finished", WAIT,
                interval=0.2)
            assert job["status"] == "succeeded", job
            assert anyone.get(job["output"][0]).headers["content-type"] == "image/png"


@pytest.mark.browser
def test_on_a_site_without_login_a_plain_result_link_shows_in_a_fresh_browser(restarted: Restart,
                                                                              cluster: LaunchedCluster) -> None:
    url = cluster.public_url + restarted.finished["output"][0]
    content_type, shown, width = shown_in_fresh_browser(url)
    assert (content_type, shown) == ("image/png", restarted.sha) and width == JOB["width"]
