"""bench.report's shared pieces of a benchmark's Markdown results."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import load_averages, markdown_table, publish


def test_publish_prints_and_writes_the_sections_one_blank_line_apart(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    sections = ["# A bench", markdown_table(["way", "seconds"], [["on disk", "1.5"], ["in memory", "1.0"]]),
                load_averages([(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)])]
    path = publish("a-bench", sections, results_dir=tmp_path)
    expected = "\n\n".join(sections)
    assert path == tmp_path / "a-bench.md"
    assert path.read_text(encoding="utf-8") == expected + "\n"
    assert capsys.readouterr().out == expected + "\n"
    assert "| in memory | 1.0 |" in expected and "after: 4.00, 5.00, 6.00" in expected
