"""``python -m bench.gpu`` on a machine without CUDA: the refusal, argument parsing, the measurement logic with
fake devices and jobs, the report's tables, and one whole run on the scaled-down twin on the CPU."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.gpu import cli, runs, timing
from bench.gpu.limits import find_limit, search_limit
from bench.gpu.report import Report
from bench.gpu.rows import DIFFUSERS, SERVING, BuildRow, LatencyRow, LimitRow, PathTiming, Size, Variant
from bench.gpu.runs import variants
from bench.gpu.timing import time_paths
from bench.harness.processes import REPO
from bench.report import LatencyStats

GIB = 1024**3
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal on a machine without CUDA")


class FakeProbe:
    """A device without timing effects: peak memory is whatever the jobs set."""

    def __init__(self) -> None:
        self.peak = 0
        self.events: list[str] = []

    def sync(self) -> None:
        self.events.append("sync")

    def reset_peak(self) -> None:
        self.peak = 0

    def peak_bytes(self) -> int:
        return self.peak

    def allocated_bytes(self) -> int:
        return 19 * GIB

    def release(self) -> None:
        self.events.append("release")

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.cuda.OutOfMemoryError)

    def host_copy_gbps(self, pinned: bool) -> float:
        return 25.0 if pinned else 10.0

    def to_host(self, pipe) -> None:
        self.events.append("to host")
        pipe.to("cpu")


# The refusal -----------------------------------------------------------------------------------------------------


@no_cuda
def test_refuses_without_cuda_in_one_line_with_exit_code_2() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.gpu", "--runs", "3"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no CUDA GPU" in result.stderr, result.stderr


@no_cuda
def test_refusal_writes_no_results(tmp_path, capsys) -> None:
    assert cli.main(["--results-dir", str(tmp_path)]) == cli.EXIT_NO_CUDA
    assert capsys.readouterr().err.strip() == cli.REFUSAL
    assert list(tmp_path.iterdir()) == []


# Arguments -------------------------------------------------------------------------------------------------------


def test_defaults_cover_the_issues_matrix() -> None:
    args = cli.parse_args([])
    assert args.sizes == [Size(768, 1024), Size(1024, 1024)] and args.steps == 8
    assert (args.dtypes, args.attention, args.compile) == (["bfloat16", "float16"], ["sdpa", "xformers"], ["off", "on"])
    assert args.oom and args.oom_size == Size(1024, 1024)
    assert len(variants(args)) == 8
    assert [v.compile for v in variants(args)] == [False] * 4 + [True] * 4  # eager first
    assert args.reproduce == "python -m bench.gpu"


def test_options_parse() -> None:
    args = cli.parse_args(["--runs", "20", "--sizes", "1024x768, 512", "--dtypes", "float16", "--attention", "xformers",
                           "--compile", "on,on", "--no-oom", "--oom-max-side", "4096"])
    assert args.runs == 20 and args.sizes == [Size(1024, 768), Size(512, 512)]
    assert variants(args) == [Variant("float16", "xformers", True)]
    assert not args.oom and args.oom_max_side == 4096
    assert args.reproduce == "python -m bench.gpu --runs 20 --sizes '1024x768, 512' --dtypes float16 --attention " \
                             "xformers --compile on,on --no-oom --oom-max-side 4096"


@pytest.mark.parametrize("argv", [["--sizes", "1000x1000"], ["--sizes", "768x"], ["--sizes", ","], ["--dtypes", "int8"],
                                  ["--attention", ""], ["--compile", "maybe"], ["--runs", "0"], ["--warmup", "-1"],
                                  ["--oom-max-side", "1000"]])
def test_bad_options_are_refused(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_limit_searches_only_on_eager_variants_of_the_first_attention() -> None:
    args = cli.parse_args([])
    assert [v.label for v in variants(args) if runs.searches_limits(v, args)] == [
        "bfloat16/sdpa/eager", "float16/sdpa/eager"]
    assert not any(runs.searches_limits(v, cli.parse_args(["--no-oom"])) for v in variants(args))


# Measurement logic -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "start", "ceiling", "granularity", "expected"), [
    (37, 1, 64, 1, (37, 38)),
    (1000, 1, 64, 1, (64, None)),
    (0, 1, 64, 1, (None, 1)),
    (5000, 1024, 8192, 256, None),  # checked below: within one granularity step
    (99999, 1024, 3008, 256, (3008, None)),  # a ceiling that is no power of two is tried itself
    (2500, 1024, 3008, 256, None),
])
def test_find_limit_doubles_then_bisects(limit, start, ceiling, granularity, expected) -> None:
    tried: list[int] = []

    def fits(value: int) -> bool:
        tried.append(value)
        return value <= limit

    ok, bad = find_limit(fits, start, ceiling, granularity)
    if expected is not None:
        assert (ok, bad) == expected
    else:
        assert ok <= limit < bad and bad - ok <= granularity
    assert len(tried) == len(set(tried)) and all(start <= value <= ceiling for value in tried)
    assert all(value % 16 == 0 for value in tried) or granularity == 1
    assert len(tried) <= 16


def test_search_limit_records_the_peak_and_the_kind_of_failure() -> None:
    probe = FakeProbe()
    variant = Variant("bfloat16", "sdpa", False)

    def job_for(batch: int):
        def job() -> None:
            if batch > 6:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            probe.peak = (20 + batch) * GIB

        return job

    row = search_limit(variant, "images per job", job_for, probe, start=1, ceiling=64, granularity=1)
    assert (row.largest_ok, row.first_failure, row.failure, row.peak_bytes) == (6, 7, "OOM", 26 * GIB)
    assert probe.events.count("release") >= 2  # before every try, and after the failure

    def broken(side: int):
        def job() -> None:
            if side > 2048:
                raise IndexError("index 600 is out of bounds for dimension 0 with size 512\nmore")
        return job

    row = search_limit(variant, "side", broken, probe, start=1024, ceiling=8192, granularity=256)
    assert row.largest_ok == 2048 and row.first_failure == 2304
    assert row.failure == "IndexError: index 600 is out of bounds for dimension 0 with size 512"


def test_time_paths_warms_up_then_interleaves_with_the_same_seeds() -> None:
    probe = FakeProbe()
    calls: list[tuple[str, int]] = []

    def job(name: str, peak: int):
        def run(seed: int) -> None:
            calls.append((name, seed))
            probe.peak = max(probe.peak, peak)
        return run

    timings = time_paths({"a": job("a", 3 * GIB), "b": job("b", 5 * GIB)}, runs=4, warmup=2, probe=probe, seed=10)
    assert calls == [("a", 10), ("a", 11), ("b", 10), ("b", 11),
                     ("a", 10), ("b", 10), ("b", 11), ("a", 11), ("a", 12), ("b", 12), ("b", 13), ("a", 13)]
    assert timings["a"].stats.count == 4 and timings["a"].first_call_s is not None
    assert (timings["a"].peak_bytes, timings["b"].peak_bytes) == (3 * GIB, 5 * GIB)
    assert time_paths({"a": job("a", 0)}, runs=1, warmup=0, probe=probe)["a"].first_call_s is None


# The report --------------------------------------------------------------------------------------------------------


def _timing(median_ms: float, peak_gib: float, first: float | None = 1.5) -> PathTiming:
    stats = LatencyStats.from_seconds([median_ms / 1000 * f for f in (0.99, 1.0, 1.0, 1.01, 1.2)])
    return PathTiming(stats, int(peak_gib * GIB), first)


def fake_report() -> Report:
    eager, compiled = Variant("bfloat16", "sdpa", False), Variant("bfloat16", "sdpa", True)
    portrait, square = Size(768, 1024), Size(1024, 1024)
    report = Report(gpu="NVIDIA H100 80GB HBM3", versions="2.13.0+cu128 / 0.42.1", steps=8, runs=5, warmup=2,
                    oom_steps=2, parameters={"transformer": 6154908736, "text encoder": 4022468096, "vae": 83819683},
                    machine="NVIDIA H100 80GB HBM3, torch 2.13.0, measured today", reproduce="python -m bench.gpu")
    report.builds += [BuildRow(eager, 4.2, int(19.1 * GIB)), BuildRow(compiled, 4.0, int(19.1 * GIB))]
    for variant, ms in ((eager, 1000.0), (compiled, 800.0)):
        for size, scale in ((portrait, 0.75), (square, 1.0)):
            report.latencies.append(LatencyRow(variant, size, DIFFUSERS, _timing(ms * scale, 24.0)))
            report.latencies.append(LatencyRow(variant, size, SERVING, _timing(ms * scale * 1.02, 24.1)))
    report.limits += [
        LimitRow(eager, "images per job at 1024×1024", 12, int(75.2 * GIB), 13, "OOM", 64),
        LimitRow(eager, "square side (px), 1 image", 8192, int(60.0 * GIB), None, None, 8192),
    ]
    report.skipped.append((Variant("float16", "xformers", False), "attention: 'xformers' needs CUDA and xformers"))
    return report


def table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the table under ``## heading``."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_report_renders_every_measurement_with_gpu_and_versions() -> None:
    markdown = fake_report().markdown()
    latency = table(markdown, "Latency and peak memory")
    assert len(latency) == 8
    assert all(row[:2] == ["NVIDIA H100 80GB HBM3", "2.13.0+cu128 / 0.42.1"] for row in latency)
    first = latency[0]
    assert first[2:11] == ["bfloat16", "sdpa", "off", "768×1024", "diffusers", "5", "750", "871", "1.5"]
    assert first[11:] == ["24.0", "–"]
    assert latency[1][6] == "serving" and latency[1][-1] == "+2.0 %"
    assert "**met**; worst +2.0 %" in markdown
    builds = table(markdown, "Build")
    assert builds[0] == ["NVIDIA H100 80GB HBM3", "2.13.0+cu128 / 0.42.1", "bfloat16", "sdpa", "off", "4.2", "19.1"]
    limits = table(markdown, "Memory limits")
    assert limits[0][4:] == ["images per job at 1024×1024", "12", "75.2", "13 (OOM)", "64"]
    assert limits[1][4:] == ["square side (px), 1 image", "8192", "60.0", "none", "8192"]
    assert "- float16/xformers/eager: attention: 'xformers' needs CUDA" in markdown
    assert "transformer 6.15 B, text encoder 4.02 B, vae 83.8 M parameters" in markdown
    assert markdown.rstrip().endswith("Reproduce: `python -m bench.gpu`")


def test_report_flags_a_serving_path_over_the_goal() -> None:
    report = fake_report()
    slow = report.latencies[3]
    report.latencies[3] = LatencyRow(slow.variant, slow.size, SERVING, _timing(1100.0, 24.0))
    assert "**NOT met**; worst +10.0 % (bfloat16/sdpa/eager, 1024×1024) over 4 comparisons" in report.markdown()
    empty = Report(gpu="g", versions="v", steps=8, runs=1, warmup=0, oom_steps=2)
    assert "nothing measured yet" in empty.markdown() and "## Memory limits" not in empty.markdown()


# One whole run on the scaled-down twin (CPU, float32) -------------------------------------------------------------


def build_tiny(variant: Variant, probe: FakeProbe):
    """``build_variant`` for the CPU: the same wrapping, the scaled-down twin, a CPU plan (xformers refused)."""
    from assets.twin_model import TINY, build_twin
    from webui.settings import WorkerSettings
    from webui.worker.pipelines.device import Machine, plan_device
    from webui.worker.pipelines.diffusers import PortraitPipeline

    settings = WorkerSettings(device="cpu", dtype=variant.dtype, attention=variant.attention, compile="off",
                              cpu_offload="off", vae_tiling="auto",
                              threads=torch.get_num_threads())
    plan = plan_device(settings, Machine(cuda=False))
    portrait = PortraitPipeline.from_pipeline(build_twin("cpu", plan.dtype, TINY), plan, model_name="tiny twin")
    return portrait, BuildRow(variant, 0.1, probe.allocated_bytes())


def test_a_whole_run_on_the_tiny_twin(tmp_path) -> None:
    args = cli.parse_args(["--runs", "1", "--warmup", "1", "--steps", "1", "--sizes", "64x48", "--dtypes", "float32",
                           "--attention", "sdpa,xformers", "--compile", "off", "--oom-size", "64x48", "--oom-max-batch",
                           "2", "--oom-max-side", "64", "--oom-steps", "1", "--results-dir", str(tmp_path)])
    report = Report(gpu="CPU", versions="test", steps=args.steps, runs=args.runs, warmup=args.warmup,
                    oom_steps=args.oom_steps)
    progress: list[int] = []
    runs.run(args, FakeProbe(), report, build=build_tiny, on_progress=lambda r: progress.append(len(r.latencies)))
    assert progress == [2, 2]  # saved before the takeover measurement, then after the variant
    assert [(row.size.label, row.path, row.timing.stats.count) for row in report.latencies] == [
        ("64×48", DIFFUSERS, 1), ("64×48", SERVING, 1)]
    assert [(row.largest_ok, row.first_failure) for row in report.limits] == [(2, None), (64, None)]
    assert [variant.attention for variant, _ in report.skipped] == ["xformers"]
    assert report.parameters["transformer"] > 0
    assert "| CPU | test | float32 | sdpa | off | 64×48 | serving | 1 |" in report.markdown()
    [promotion] = report.promotions
    assert promotion.weights_bytes == runs.weight_bytes(build_tiny(Variant("float32", "sdpa", False), FakeProbe())[0]
                                                       .model.text2img)
    assert promotion.place_pageable_s >= 0 and promotion.place_pinned_s >= 0 and promotion.warmup_s > 0
    assert promotion.copy_floor_s == pytest.approx(promotion.weights_bytes / 10e9)
    assert "## Warm standby takeover with real-size weights" in report.markdown()


def test_both_paths_run_the_same_job() -> None:
    """The bare diffusers call and the serving path draw the same image from the same seed."""
    portrait, _ = build_tiny(Variant("float32", "sdpa", False), FakeProbe())
    size = Size(64, 48)
    bare = timing.bare_job(portrait.model.text2img, size, steps=2)(seed=5)
    served = timing.serving_job(portrait, size, steps=2)(seed=5)
    assert len(bare) == len(served) == 1 and bare[0].size == (64, 48)
    assert np.array_equal(np.asarray(bare[0]), np.asarray(served[0]))


def test_promotion_leaves_the_served_pipeline_placed_and_drawing_the_same_image() -> None:
    """The takeover measurement moves the weights out and back; the pipeline serves the same image after it."""
    probe = FakeProbe()
    portrait, _ = build_tiny(Variant("float32", "sdpa", False), probe)
    before = timing.serving_job(portrait, Size(64, 48), steps=1)(seed=3)
    row = runs.measure_promotion(Variant("float32", "sdpa", False), portrait, probe)
    assert portrait.placed and probe.events.count("to host") == 2
    after = timing.serving_job(portrait, Size(64, 48), steps=1)(seed=3)
    assert np.array_equal(np.asarray(before[0]), np.asarray(after[0]))
    assert row.takeover_s == pytest.approx(row.place_pinned_s + row.warmup_s)


def test_the_promotion_measurement_can_be_turned_off() -> None:
    assert cli.parse_args([]).promotion is True
    assert cli.parse_args(["--no-promotion"]).promotion is False


def test_the_gpu_benchmark_needs_no_web_stack() -> None:
    """``bench.gpu`` runs on a bare CUDA box with torch and diffusers: its imports (the warm-up included)
    pull in neither the worker's HTTP stack nor Gradio (a takeover run once died on ``import fastapi``)."""
    code = ("import sys, bench.gpu.cli, bench.gpu.runs, assets.twin_model, webui.worker.pipelines.diffusers, "
            "webui.worker.pipelines.warmup, bench.gpu_session.cli, bench.gpu_session.configs, "
            "bench.gpu_session.restart, bench.gpu_session.report, webui.worker.compile_cache; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'gradio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_failing_takeover_measurement_is_reported_and_the_run_goes_on(tmp_path, monkeypatch) -> None:
    args = cli.parse_args(["--runs", "1", "--warmup", "0", "--steps", "1", "--sizes", "64x48", "--dtypes", "float32",
                           "--attention", "sdpa", "--compile", "off", "--no-oom", "--results-dir", str(tmp_path)])
    report = Report(gpu="CPU", versions="test", steps=1, runs=1, warmup=0, oom_steps=1)

    def broken(*_args) -> None:
        raise ModuleNotFoundError("No module named 'fastapi'")

    monkeypatch.setattr(runs, "measure_promotion", broken)
    saved: list[int] = []
    runs.run(args, FakeProbe(), report, build=build_tiny, on_progress=lambda r: saved.append(len(r.latencies)))
    assert saved == [2, 2] and len(report.latencies) == 2 and not report.promotions
    assert [why for _, why in report.skipped] == ["standby takeover: ModuleNotFoundError: No module named 'fastapi'"]
