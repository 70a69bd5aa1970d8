"""The report writer: markdown tables and the HTML + markdown report with its figures."""

from __future__ import annotations

import numpy as np

from radjepa_lab.viz.report import ReportSection, markdown_table, write_report


def test_markdown_table_escapes_pipes() -> None:
    md = markdown_table([{"a": "x | y", "b": 0.12345}, {"a": "z", "b": float("nan")}])
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b |"
    assert lines[2] == "| x \\| y | 0.123 |"
    assert lines[3] == "| z | — |"


def test_write_report_files(tmp_path) -> None:
    from radjepa_lab.viz import plot_coverage

    sec = ReportSection("Masks", "Some text.\n\n- one\n- two",
                        tables=[("t", [{"k": 1}])],
                        figures=[("cov", plot_coverage(np.ones((4, 4))), "coverage")])
    index = write_report(tmp_path, "Title <x>", [sec])
    assert index.name == "index.html"
    html = index.read_text()
    assert "Title &lt;x&gt;" in html and "<li>one</li>" in html and "figures/cov.png" in html
    assert (tmp_path / "figures" / "cov.png").stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    assert "## Masks" in md and "![coverage](figures/cov.png)" in md
