"""Fair share in the job store, on SQLite and on a real PostgreSQL server: dispatchers take jobs in fair order
across owners (least GPU time per account weight first, then the oldest), on a virtual clock (``now=``) so that
durations are exact: weights 1/1/2 give 25/25/50 % of the GPU time, an owner with long jobs gets fewer of them,
a newcomer's one job goes before a flood's next, and two dispatchers in two processes never take one job twice.

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_fair_share.py``.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import timedelta

from sqlalchemy import Engine

from jobs.store import claim_next, create_account, fail, set_weight, submit
from jobs.store.records import utc_now
from tests.test_jobs_claims import claim_many

TOLERANCE = 10.0
"""Percentage points a measured share may be off its target."""


def owners(engine: Engine, weights: dict[str, float]) -> dict[str, str]:
    """Accounts called by ``weights``' names with those weights: name -> account id (the jobs' owner)."""
    made = {name: create_account(engine, name).id for name in weights}
    for name, weight in weights.items():
        set_weight(engine, name, weight)
    return made


def run_flood(engine: Engine, queued: dict[str, int], seconds: dict[str, float], slots: int,
              claims: int) -> Counter[str]:
    """Owners' queued jobs (owner -> count) run by ``slots`` dispatchers on a virtual clock, each job taking its
    owner's ``seconds``: the GPU seconds each owner got over ``claims`` claims."""
    t0 = utc_now()
    for n in range(max(queued.values())):
        for owner, count in queued.items():
            if n < count:
                submit(engine, {"n": n}, owner=owner, now=t0)
    running: dict[int, tuple[str, object]] = {}  # slot -> (job id, when it ends)
    free_at = {slot: t0 for slot in range(slots)}
    used: Counter[str] = Counter()
    for _ in range(claims):
        slot = min(free_at, key=free_at.__getitem__)
        now = free_at[slot]
        if slot in running:
            fail(engine, running.pop(slot)[0], "done (a stand-in outcome)", now=now)
        job = claim_next(engine, f"d{slot}", lease_seconds=3600, now=now)
        assert job is not None, "a claim found nothing while jobs were waiting"
        used[job.owner] += seconds[job.owner]
        running[slot] = (job.id, None)
        free_at[slot] = now + timedelta(seconds=seconds[job.owner])
    return used


def shares(used: Counter[str], names: dict[str, str]) -> dict[str, float]:
    total = sum(used.values())
    return {name: 100.0 * used[owner] / total for name, owner in names.items()}


def test_weights_1_1_2_get_25_25_50_percent_of_the_gpu_time(job_store: Engine) -> None:
    names = owners(job_store, {"a": 1, "b": 1, "c": 2})
    used = run_flood(job_store, {owner: 80 for owner in names.values()}, dict.fromkeys(names.values(), 1.0),
                     slots=2, claims=160)
    measured = shares(used, names)
    for name, target in {"a": 25.0, "b": 25.0, "c": 50.0}.items():
        assert abs(measured[name] - target) <= TOLERANCE, f"{name}: {measured[name]:.1f} %, not {target} %"


def test_the_share_is_gpu_time_so_long_jobs_get_fewer_turns(job_store: Engine) -> None:
    """Equal weights, but c's jobs take 3 s and the others' 1 s: each owner gets a third of the GPU time, so c
    runs about a third as many jobs as a or b."""
    names = owners(job_store, {"a": 1, "b": 1, "c": 1})
    seconds = {names["a"]: 1.0, names["b"]: 1.0, names["c"]: 3.0}
    used = run_flood(job_store, {owner: 80 for owner in names.values()}, seconds, slots=2, claims=120)
    for name, share in shares(used, names).items():
        assert abs(share - 100 / 3) <= TOLERANCE, f"{name}: {share:.1f} % of the GPU time, not a third"


def test_a_newcomer_s_job_goes_before_the_flood_s_next(job_store: Engine) -> None:
    """A queued 30 jobs and runs one; B then submits one: the next claim is B's, and A follows again."""
    names = owners(job_store, {"a": 1, "b": 1})
    t0 = utc_now()
    flood = [submit(job_store, {"n": n}, owner=names["a"], now=t0)[0] for n in range(30)]
    assert claim_next(job_store, "d1", now=t0).id == flood[0].id
    late = submit(job_store, {"n": 0}, owner=names["b"], now=t0 + timedelta(seconds=0.1))[0]
    fail(job_store, flood[0].id, "done (a stand-in outcome)", now=t0 + timedelta(seconds=1))
    assert claim_next(job_store, "d1", now=t0 + timedelta(seconds=1)).id == late.id
    assert claim_next(job_store, "d2", now=t0 + timedelta(seconds=1)).id == flood[1].id


def test_one_owner_alone_is_served_first_in_first_out(job_store: Engine) -> None:
    made = [submit(job_store, {"n": n}, owner="alice")[0].id for n in range(5)]
    assert [claim_next(job_store, "d1").id for _ in made] == made


def test_two_dispatchers_in_fair_order_never_take_one_job_twice(store_url: str, job_store: Engine) -> None:
    """Three weighted owners' 90 jobs, claimed by two processes at once as fast as they can (their usage changing
    with every claim): every claim gets a job, and all 90 are different."""
    names = owners(job_store, {"a": 1, "b": 1, "c": 2})
    made = {submit(job_store, {"n": n}, owner=owner)[0].id for n in range(30) for owner in names.values()}
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        start = manager.Barrier(2)
        claimed = pool.starmap(claim_many, [(store_url, f"d{n}", len(made) // 2, start) for n in range(2)])
    everything = [job_id for ids in claimed for job_id in ids]
    assert None not in everything, f"{everything.count(None)} claims found no job while jobs were waiting"
    assert len(everything) == len(set(everything)) == len(made), "a job was handed to two dispatchers"
    assert set(everything) == made
