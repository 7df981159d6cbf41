"""GPU benchmark of real-size Z-Image-Turbo jobs, on the architecture twin (random weights, no download).

The command line (``python -m bench.gpu``): its flags, the variants they ask for, the refusal without CUDA.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.gpu.probe import CudaProbe
from bench.gpu.report import Report
from bench.gpu.rows import PROG, Size
from bench.gpu.runs import run
from bench.report import RESULTS_DIR, machine_summary, write_results

EXIT_NO_CUDA = 2
REFUSAL = (f"{PROG}: no CUDA GPU (torch.cuda.is_available() is False); it builds a 10-billion-parameter "
           "Z-Image-Turbo twin on the GPU and measures GPU time, so it only runs on a CUDA machine")


def comma_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of ``choices``."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        wrong = [item for item in items if item not in choices]
        if not items or wrong:
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of {', '.join(choices)}")
        return list(dict.fromkeys(items))

    return parse


def size_list(text: str) -> list[Size]:
    """An argparse type: comma-separated sizes (``768x1024,1024x1024``)."""
    sizes = [Size.parse(item.strip()) for item in text.split(",") if item.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 768x1024")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="Timed runs per path, variant and size.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed runs per path first (compile happens here).")
    parser.add_argument("--steps", type=int, default=8, help="Denoising steps per job.")
    parser.add_argument("--sizes", type=size_list, default="768x1024,1024x1024",
                        metavar="WxH,...", help="Image sizes (width x height).")
    parser.add_argument("--dtypes", type=comma_list(["bfloat16", "float16", "float32"]),
                        default="bfloat16,float16", help="Weight dtypes.")
    parser.add_argument("--attention", type=comma_list(["sdpa", "xformers"]), default="sdpa,xformers",
                        help="Attention backends (xformers is skipped when not installed).")
    parser.add_argument("--compile", type=comma_list(["off", "on"]), default="off,on",
                        help="torch.compile of the transformer.")
    parser.add_argument("--oom", action=argparse.BooleanOptionalAction, default=True,
                        help="Search the largest batch and side (eager variants of the first --attention).")
    parser.add_argument("--oom-size", type=Size.parse, default="1024x1024", metavar="WxH",
                        help="Image size of the batch search.")
    parser.add_argument("--oom-steps", type=int, default=2, help="Denoising steps per try of the limit search.")
    parser.add_argument("--oom-max-batch", type=int, default=64, help="Largest batch tried.")
    parser.add_argument("--oom-max-side", type=int, default=8192,
                        help="Largest square side tried (8192 is the limit of Z-Image's RoPE tables).")
    parser.add_argument("--promotion", action=argparse.BooleanOptionalAction, default=True,
                        help="Time a warm standby's takeover (host memory -> GPU, warm-up) on the first eager variant.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the first run (run i uses seed + i).")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="Where gpu.md is written.")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line); ``args.reproduce`` is the command that reruns it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("runs", "steps", "oom_steps", "oom_max_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.oom_max_side < 16 or args.oom_max_side % 16:
        parser.error("--oom-max-side must be a positive multiple of 16")
    args.reproduce = " ".join([PROG, *(shlex.quote(arg) for arg in argv)])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 without CUDA)."""
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(REFUSAL, file=sys.stderr)
        return EXIT_NO_CUDA
    import diffusers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = Report(gpu=torch.cuda.get_device_name(0), versions=f"{torch.__version__} / {diffusers.__version__}",
                    steps=args.steps, runs=args.runs, warmup=args.warmup, oom_steps=args.oom_steps,
                    reproduce=args.reproduce)

    def save(report: Report) -> None:
        report.machine = f"{machine_summary()}, diffusers {diffusers.__version__}."
        write_results("gpu", report.markdown(), None, args.results_dir)

    save(run(args, CudaProbe(), report, on_progress=save))
    print(report.markdown())
    return 0
