"""The command line: flags, the refusal without CUDA (unless ``--tiny``), the run, the files in ``--out``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.gpu.rows import Size

PROG = "python -m bench.gpu_session"
EXIT_NO_CUDA = 2
TINY = {"size": "64x64", "steps": 2, "runs": 3, "warmup": 1}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="The scaled-down twin on the CPU, eager (the tests).")
    parser.add_argument("--out", type=Path, default=Path("."), help="Where gpu-session.md and .json are written.")
    parser.add_argument("--size", type=Size.parse, default=None, help="WxH (default 1024x1024; --tiny 64x64).")
    parser.add_argument("--steps", type=int, default=None, help="Denoising steps (default 8; --tiny 2).")
    parser.add_argument("--runs", type=int, default=None, help="Timed runs per configuration (default 6; --tiny 3).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed runs first (default 2; --tiny 1).")
    parser.add_argument("--fp8", action=argparse.BooleanOptionalAction, default=True,
                        help="Ask the chooser with --fp8 auto (FP8 where the GPU and torchao allow).")
    parser.add_argument("--restarts", type=int, default=2, help="Starts on one compile cache (0: skip).")
    parser.add_argument("--restart-child", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    defaults = TINY if args.tiny else {"size": "1024x1024", "steps": 8, "runs": 6, "warmup": 2}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, Size.parse(value) if name == "size" else value)
    args.reproduce = " ".join([PROG, *(shlex.quote(arg) for arg in argv)])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the session; returns the exit code (2 without CUDA unless ``--tiny``)."""
    args = parse_args(argv)
    if args.restart_child:
        from bench.gpu_session.restart import child_main

        return child_main(args.restart_child)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print(f"{PROG}: no CUDA GPU; run it on a lent GPU, or with --tiny on the CPU", file=sys.stderr)
        return EXIT_NO_CUDA
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args, save=lambda report: save(report, args.out))
    print(report.markdown())
    return 0


def save(report, out: Path) -> None:
    """Write what is measured so far (after each part: a run stopped at its time limit keeps it)."""
    (out / "gpu-session.md").write_text(report.markdown())
    (out / "gpu-session.json").write_text(json.dumps(summary(report), indent=1))


def run(args: argparse.Namespace, save=lambda report: None):
    """Configurations, then restarts; the report of both (``save``d after each)."""
    import diffusers
    import torch

    from assets.twin_model import TINY as TINY_TWIN
    from assets.twin_model import ZIMAGE_TURBO, build_twin
    from bench.gpu.probe import CudaProbe
    from bench.gpu_session.configs import candidates, measure_all, settings_for
    from bench.gpu_session.report import SessionReport
    from bench.gpu_session.restart import StartSpec, measure_restarts
    from webui.worker.pipelines.configuration import Flags, choose_configuration
    from webui.worker.pipelines.device import probe_machine
    from webui.worker.pipelines.quality import QualityGate

    device = "cpu" if args.tiny else "cuda"
    machine = probe_machine()
    facts = machine.facts(device == "cuda")
    chosen = choose_configuration(facts, Flags(fp8="auto" if args.fp8 else "off"))
    probe = CudaProbe() if device == "cuda" else CpuProbe()
    torchao = _version("torchao")
    report = SessionReport(
        device=f"{machine.gpu_name} (compute capability {facts.capability})" if device == "cuda" else "CPU (--tiny)",
        versions=f"torch {torch.__version__}, diffusers {diffusers.__version__}, torchao {torchao}, "
        f"xformers {_version('xformers')}", size=args.size.label, steps=args.steps, runs=args.runs,
        warmup=args.warmup, chosen=chosen, gate=QualityGate(), reproduce=args.reproduce)
    twin = TINY_TWIN if args.tiny else ZIMAGE_TURBO

    def build(configuration):
        return build_twin(device, getattr(torch, str(configuration.dtype.value)), twin)

    report.measured, report.selection = measure_all(
        candidates(facts, args.fp8), build, machine, device, args.size, args.steps, args.runs, args.warmup, probe,
        report.gate, report.skipped)
    save(report)
    if args.restarts:
        with tempfile.TemporaryDirectory(prefix="compile-cache-") as cache_dir:
            spec = StartSpec(cache_dir, args.tiny, args.size.width, args.size.height, args.steps,
                             settings_for(report.selection.chosen, device).model_dump(
                                 include={"device", "dtype", "attention", "compile", "fp8", "cpu_offload"}))
            try:
                report.starts = measure_restarts(spec, args.restarts)
            except Exception as exc:  # noqa: BLE001 - reported; the configurations' figures are kept
                logging.getLogger(__name__).exception("restart measurement failed")
                report.skipped.append(("restart-to-ready", f"{type(exc).__name__}: {exc}"[-300:]))
        save(report)
    return report


def summary(report) -> dict:
    """The JSON beside the Markdown: every figure, no images."""
    return {
        "device": report.device, "versions": report.versions, "chosen": report.chosen.as_dict(),
        "configurations": [{"label": item.configuration.label, "p50_ms": item.stats.median_ms,
                            "p95_ms": item.stats.p95_ms, "first_call_s": item.first_call_s,
                            "psnr_db": None if item.verdict is None else item.verdict.worst.psnr_db,
                            "mean_abs": None if item.verdict is None else item.verdict.worst.mean_abs,
                            "passed": None if item.verdict is None else item.verdict.passed}
                           for item in report.measured],
        "kept": report.selection.chosen.label if report.selection else None,
        "starts": [asdict(start) for start in report.starts], "skipped": report.skipped,
    }


class CpuProbe:
    """``bench.gpu.probe.Probe`` for ``--tiny`` on the CPU: nothing to synchronise or measure."""

    def sync(self) -> None: ...

    def reset_peak(self) -> None: ...

    def peak_bytes(self) -> int:
        return 0

    def allocated_bytes(self) -> int:
        return 0

    def release(self) -> None:
        import gc

        gc.collect()

    def is_oom(self, exc: BaseException) -> bool:
        return False


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
