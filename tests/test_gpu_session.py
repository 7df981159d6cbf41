"""``python -m bench.gpu_session`` (issue 25's one GPU call) kept working on the CPU: ``--tiny`` end to end,
the restart child's JSON, and the refusal without CUDA."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from bench.gpu.rows import Size
from bench.gpu_session import cli
from bench.gpu_session.cli import CpuProbe
from bench.gpu_session.configs import REFERENCE, candidates, measure_all, measurement_order
from bench.gpu_session.restart import Start, StartSpec, child_main
from webui.worker.pipelines.configuration import DeviceFacts, Flags, choose_configuration
from webui.worker.pipelines.quality import QualityGate


def test_tiny_session_writes_every_table(tmp_path, capsys) -> None:
    assert cli.main(["--tiny", "--out", str(tmp_path), "--runs", "2", "--restarts", "2"]) == 0
    markdown = (tmp_path / "gpu-session.md").read_text()
    for heading in ("## What the worker's chooser picks here", "## Latency and image difference per configuration",
                    "## Restart-to-ready with the compile cache"):
        assert heading in markdown
    figures = json.loads((tmp_path / "gpu-session.json").read_text())
    assert [item["label"] for item in figures["configurations"]] == ["bfloat16/sdpa", "float32/sdpa"]
    reference, float32 = figures["configurations"]
    assert reference["psnr_db"] is None and float32["psnr_db"] > 0 and float32["p50_ms"] > 0
    assert figures["kept"] in ("bfloat16/sdpa", "float32/sdpa")
    assert figures["kept"] == ("float32/sdpa" if float32["passed"] else "bfloat16/sdpa")
    assert [start["warmup_s"] > 0 and start["first_job_s"] > 0 for start in figures["starts"]] == [True, True]
    assert figures["chosen"]["compile"] == {"value": False, "reason": "CPU: torch.compile of the denoiser is CUDA only"}
    assert "| first start (empty cache) |" in markdown and "| restart 1 (warm cache) |" in markdown
    assert markdown in capsys.readouterr().out


def test_the_restart_child_prints_its_start_as_json(tmp_path, capsys) -> None:
    spec = StartSpec(str(tmp_path / "cache"), True, 32, 32, 1, {"device": "cpu", "dtype": "float32"})
    assert child_main(json.dumps(asdict(spec))) == 0
    start = Start(**json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert start.ready_s == start.build_s + start.place_s + start.warmup_s > 0
    assert (tmp_path / "cache").is_dir()  # the compile cache was set up before anything compiled


def test_an_h100_measures_fp8_and_compile_after_the_eager_reference() -> None:
    h100 = DeviceFacts(True, "NVIDIA H100", (9, 0), 80 << 30, True, "2.11.0+cu130", torchao=True)
    order = [configuration.label for configuration in measurement_order(candidates(h100, fp8=True))]
    assert order == [REFERENCE.label, "bfloat16+compile/sdpa", "bfloat16+compile+fp8/sdpa"]
    assert [c.label for c in candidates(h100, fp8=False)] == ["bfloat16+compile/sdpa"]


def test_a_configuration_that_fails_is_reported_and_the_others_are_measured() -> None:
    from assets.twin_model import TINY, build_twin
    from webui.worker.pipelines.device import Machine

    def build(configuration):
        if configuration.dtype.value == "float32":
            raise RuntimeError("no kernel for this\nsecond line")
        return build_twin("cpu", torch.bfloat16, TINY)

    skipped: list[tuple[str, str]] = []
    float32 = choose_configuration(DeviceFacts(cuda=False), Flags())
    measured, selection = measure_all([float32], build, Machine(cuda=False), "cpu", Size(32, 32), 1, 1, 0,
                                      CpuProbe(), QualityGate(), skipped)
    assert [item.configuration.label for item in measured] == [REFERENCE.label]
    assert skipped == [("float32/sdpa", "RuntimeError: no kernel for this")]
    assert selection.chosen is REFERENCE


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal on a machine without CUDA")
def test_without_cuda_and_without_tiny_it_refuses(tmp_path, capsys) -> None:
    assert cli.main(["--out", str(tmp_path)]) == cli.EXIT_NO_CUDA
    assert "no CUDA GPU" in capsys.readouterr().err and not list(tmp_path.iterdir())
