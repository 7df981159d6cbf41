"""Statistics, Markdown tables, result files and plots shared by the benchmarks.

Every benchmark ends the same way: ``LatencyStats`` summarise latencies, ``markdown_table``
renders them, ``write_results`` saves ``bench/results/<name>.md`` and ``<name>.png`` (the
files the README shows) and ``new_figure`` gives a matplotlib figure on the Agg backend, so
the benchmarks run on headless machines.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class LatencyStats:
    """Median, 95th and 99th percentiles and extremes of a set of latencies, in milliseconds."""

    count: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, values: Iterable[float]) -> LatencyStats:
        """Summarise latencies given in seconds (an empty set gives NaNs and count 0)."""
        data = np.asarray(list(values), dtype=float) * 1000.0
        if data.size == 0:
            return cls(0, *[float("nan")] * 5)
        return cls(
            count=int(data.size),
            median_ms=float(np.median(data)),
            p95_ms=float(np.percentile(data, 95)),
            p99_ms=float(np.percentile(data, 99)),
            min_ms=float(data.min()),
            max_ms=float(data.max()),
        )


def fmt_ms(value: float) -> str:
    """``1234.5`` -> ``"1234"``; NaN -> ``"–"``."""
    return "–" if np.isnan(value) else f"{value:.0f}"


def fmt_seconds(value: float | None) -> str:
    """Seconds with two decimals; ``None`` (never happened) -> ``"–"``."""
    return "–" if value is None else f"{value:.2f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    rows = [[str(cell) for cell in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in rows) if rows else False for i in range(len(headers))]
    line = "| " + " | ".join(headers) + " |"
    rule = "|" + "|".join("---:" if num else "---" for num in numeric) + "|"
    body = ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([line, rule, *body])


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("×%x").replace(",", ""))
    except ValueError:
        return text == "–"
    return True


def machine_summary() -> str:
    """One line naming the machine, its load and the library versions a result was measured with.

    The load average tells a reader whether other work shared the machine during the run.
    """
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{device}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"load average {load} at the end, measured {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )


def new_figure(rows: int = 1, cols: int = 1, **kwargs: object) -> tuple[Figure, np.ndarray]:
    """A figure with a grid of axes (always returned as a 2-D array)."""
    figure, axes = plt.subplots(rows, cols, squeeze=False, **kwargs)
    return figure, axes


def write_results(name: str, markdown: str, figure: Figure | None, results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Write ``<name>.md`` (and ``<name>.png`` when there is a figure); return the paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    md_path = results_dir / f"{name}.md"
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    paths = [md_path]
    if figure is not None:
        png_path = results_dir / f"{name}.png"
        figure.savefig(png_path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(png_path)
    return paths


def publish(name: str, sections: Sequence[str], results_dir: Path = RESULTS_DIR) -> Path:
    """Print a Markdown report made of ``sections`` (blank lines between) and write it to ``<name>.md``."""
    report = "\n\n".join(sections)
    print(report)
    return write_results(name, report, None, results_dir)[0]


def load_averages(loads: list[tuple[float, ...]]) -> str:
    """"Load average (1, 5, 15 min) before: ...; after: ..." for the first and last reading."""
    before, after = ("{:.2f}, {:.2f}, {:.2f}".format(*values) for values in (loads[0], loads[-1]))
    return f"Load average (1, 5, 15 min) before: {before}; after: {after}"
