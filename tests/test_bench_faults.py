"""``python -m bench.faults``'s figures and table, from made-up load records (no cluster): the benchmark itself
needs root and minutes (``bench/results/faults.md``), so this keeps its arithmetic and its doc from rotting."""

from __future__ import annotations

import itertools

from bench.faults import KINDS, first_try_cause, parse_args, render
from bench.harness.fault_figures import HEADERS, FaultRun, summary_rows
from bench.harness.generation import CallFailed, Rejected, Reply
from bench.harness.load import FAILED, OK, Clock, Record
from bench.harness.resends import advised_call
from bench.report import markdown_table


def call(start: float, seconds: float, kind: str = "rest", attempts: int = 1, ok: bool = True) -> Record:
    return Record("c", kind, True, start, start + seconds, OK if ok else FAILED, "" if ok else "HTTP 503",
                  attempts=attempts)


def pair_run(held: float, load: float) -> FaultRun:
    records = [call(0.0, 0.5), call(0.5, 0.7), call(1.0, 0.6),  # normal rest: median 0.6
               call(0.0, 1.0, "gradio_client"),  # normal gradio: 1.0
               call(1.9, 4.1, attempts=2),  # in flight at the fault, one resend: 3.5 s extra
               call(2.5, 2.0, "gradio_client"),  # 1.0 s extra
               call(3.0, 9.0, attempts=4, ok=False),  # lost
               call(20.0, 0.5)]  # after the settling: not counted
    return FaultRun("holder killed", records, fault_at=2.0, settled_at=10.0, both_held_s=held, load_average=load)


def test_counts_extra_latency_and_two_holders_per_kind() -> None:
    runs = [pair_run(0.0, 1.5), pair_run(0.25, 2.25), FaultRun("front", [call(0.0, 0.5), call(1.0, 2.5)], 1.5, 4.0)]
    assert [r.failed_first_tries() for r in runs[:1]] == [2] and runs[0].lost() == 1
    assert runs[0].max_extra_s() == 8.4  # the lost call, 9.0 s against a normal 0.6 s
    assert summary_rows(runs) == [
        ["holder killed", 2, "4 of 6", "2 of 6", "8.40", "0.25", "1.50–2.25"],
        ["front", 1, "0 of 1", "0 of 1", "2.00", "–", "0.00–0.00"],  # normal: the run's own median (none before)
    ]


def test_calls_from_an_earlier_uncounted_fault_are_left_out() -> None:
    run = FaultRun("busy", [call(0.0, 0.5), call(1.0, 6.0, attempts=3), call(5.0, 0.6)], 4.0, 8.0, counted_from=4.0)
    assert (len(run.counted()), run.failed_first_tries()) == (1, 0)
    assert round(run.max_extra_s() or 0, 3) == 0.1  # 0.6 s against a normal 0.5 s


def test_resends_follow_the_advice_and_refusals_are_not_resent() -> None:
    clock, pauses = Clock(), (0.0, 0.0, 0.0)
    answers = itertools.chain([CallFailed("HTTP 503"), CallFailed("ConnectError")], itertools.repeat(None))

    def flaky() -> Reply:
        answer = next(answers)
        if answer is not None:
            raise answer
        return Reply(1, 64, 64, "w1")

    saved = advised_call(clock, "rest1", "rest", flaky, pauses=pauses)
    assert (saved.outcome, saved.attempts, saved.detail) == (OK, 3, "CallFailed: HTTP 503")

    def refused() -> Reply:
        raise Rejected("prompt: too long", 422)

    assert advised_call(clock, "rest1", "rest", refused, pauses=pauses).attempts == 1
    ui = advised_call(clock, "gradio", "gradio_client", refused, resend_refusals=True, pauses=pauses)
    assert (ui.outcome, ui.attempts) == (FAILED, 4)  # the first try and three resends


def test_the_doc_has_the_method_the_table_and_every_run() -> None:
    runs = [pair_run(0.0, 1.5)]
    markdown = render(runs, "python -m bench.faults --runs 1", "CPU (2 cores)", ["one_box stopped: TimeoutError"])
    assert markdown_table(HEADERS, summary_rows(runs)) in markdown
    assert "0.5 s, 1 s, 2 s" in markdown and "CPU (2 cores)" in markdown
    assert "- holder killed: 3 calls, 2 failed first tries, 1 lost" in markdown
    assert "- **not measured**: one_box stopped: TimeoutError" in markdown
    assert parse_args([]).kinds == list(KINDS) and parse_args(["--runs", "3"]).runs == 3


def test_a_failed_try_is_named_by_its_cause() -> None:
    assert first_try_cause("CallFailed: HTTP 503: No worker is up right now (starting)") == "HTTP 503"
    assert first_try_cause("CallFailed: no result within 60 s (sent nothing)") == "no result within 60 s"
    assert first_try_cause("CallFailed: RemoteProtocolError: Server disconnected") == "RemoteProtocolError"
