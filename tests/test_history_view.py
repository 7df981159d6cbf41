"""The History's pure parts, in process: a card shows a prompt as text (never as markup), the page's dates
become the listing's range (the To day included), and whose job a request is comes from its basic auth."""

from __future__ import annotations

import base64

import pytest
from starlette.requests import Request

from jobs.api.owners import owner_of
from webui.web.jobs_wire import JobSnapshot
from webui.web.studio.history_view import card, day_range, form_values, job_seeds, settings, summary


def test_a_card_shows_a_prompt_with_markup_as_text() -> None:
    job = JobSnapshot.model_validate({"id": "j_1", "status": "succeeded", "created_at": "2026-12-05T10:00:00Z",
                                      "input": {"prompt": '<img src=x onerror="alert(1)">', "preset": "<b>x</b>"},
                                      "results": [{"url": "/v1/jobs/j_1/results/0", "sha256": "0", "width": 512,
                                                   "height": 640}]})
    shown = card(summary(job))
    assert "<img src=x" not in shown and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown
    assert "&lt;b&gt;x&lt;/b&gt;" in shown and "512×640" in shown and "2026-12-05 10:00 UTC" in shown
    assert 'src="/v1/jobs/j_1/thumbnails/0"' in shown


def test_use_these_settings_gives_the_seed_the_job_drew_and_no_photo() -> None:
    job = JobSnapshot.model_validate({"id": "j_2", "status": "succeeded", "input": {
        "prompt": "p", "seed": None, "steps": 8, "init_image": "AAAA"}, "generation": {"seed": 77, "params": {
            "prompt": "p", "steps": 8, "width": 512}}})
    chosen = settings(job)
    assert chosen["seed"] == 77 and chosen["retouch"] is True and "init_image" not in chosen
    assert form_values(chosen, ("prompt", "seed", "randomize", "width", "guidance")) == ["p", 77, False, 512, None]
    stripped = JobSnapshot.model_validate({**job.model_dump(), "input": {"prompt": "p", "strength": 0.6},
                                           "generation": {"seed": 77, "params": {"prompt": "p", "mode": "retouch"}}})
    assert settings(stripped)["retouch"] is True  # its photo removed by the account's retention: still a retouch
    sized = {"width": 256, "height": 256}
    assert form_values(sized, ("width", "resolution"), lambda w, h: f"{w}x{h}") == [256, "256x256"]
    assert form_values(sized, ("width", "resolution")) == [256, None]  # no menu named: left as it is


def test_each_image_of_a_job_has_its_own_seed_or_none_when_the_job_kept_none() -> None:
    results = [{"url": f"/v1/jobs/j_3/results/{index}", "sha256": "0"} for index in range(3)]
    job = {"id": "j_3", "status": "succeeded", "input": {"prompt": "p"}, "results": results}
    drawn = JobSnapshot.model_validate({**job, "generation": {"seed": 41, "seeds": [41, 42, 43]}})
    older = JobSnapshot.model_validate({**job, "generation": {"seed": 41}})  # kept before ``seeds`` existed
    unknown = JobSnapshot.model_validate(job)
    assert job_seeds(drawn) == job_seeds(older) == [41, 42, 43]
    assert job_seeds(unknown) == [None, None, None]


def test_the_page_s_dates_become_the_listing_s_range_to_day_included() -> None:
    assert day_range("2026-12-01", " 2026-12-07 ") == {"since": "2026-12-01", "until": "2026-12-08"}
    assert day_range("", "") == {}
    with pytest.raises(ValueError, match="is not a date: write it as YYYY-MM-DD"):
        day_range("last tuesday", "")


def request_with(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.mark.parametrize(("authorization", "owner"), [
    (None, ""), ("Basic " + base64.b64encode(b"alice:pw:with:colons").decode(), "alice"),
    ("Bearer abc", ""), ("Basic not*base64", ""), ("Basic " + base64.b64encode(b"\xff\xfe").decode(), "")])
def test_a_job_s_owner_is_the_basic_auth_user_or_nobody(authorization: str | None, owner: str) -> None:
    assert owner_of(request_with(authorization)) == owner
