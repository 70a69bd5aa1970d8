"""A small static report: PNG figures + ``report.md`` + ``index.html``.

The writer (:func:`write_report`) knows nothing about JEPA: it takes sections of text, tables
and matplotlib figures. :func:`comparison_table` turns probe rows into printable rows. The
demo and ``radjepa-lab probe`` (:mod:`radjepa_lab.demo`) compose the sections.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "ReportSection",
    "comparison_table",
    "markdown_table",
    "write_report",
]


@dataclass
class ReportSection:
    """One heading with markdown-ish text (paragraphs and ``- `` bullets), tables and figures."""

    title: str
    text: str = ""
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    figures: list[tuple[str, Any, str]] = field(default_factory=list)  # (name, Figure, caption)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts (same keys) -> a GitHub-markdown table."""
    if not rows:
        return "_(empty)_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p><em>(empty)</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_text(text: str) -> str:
    out, items = [], []
    for block in text.strip().split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if lines and all(ln.lstrip().startswith("- ") for ln in lines):
            items = "".join(f"<li>{html.escape(ln.lstrip()[2:])}</li>" for ln in lines)
            out.append(f"<ul>{items}</ul>")
        elif lines:
            out.append(f"<p>{html.escape(' '.join(lines))}</p>")
    return "\n".join(out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#444}"
)


def write_report(
    out_dir: str | Path, title: str, sections: Sequence[ReportSection], dpi: int = 100
) -> Path:
    """Save every figure as ``figures/<name>.png`` and write ``report.md`` and ``index.html``.

    Returns the path of ``index.html``. Figures are closed-free pyplot-less objects, so nothing
    leaks between calls.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    md = [f"# {title}\n"]
    hb = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    used: set[str] = set()
    for sec in sections:
        md.append(f"\n## {sec.title}\n")
        hb.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            md.append(sec.text.strip() + "\n")
            hb.append(_html_text(sec.text))
        for caption, rows in sec.tables:
            if caption:
                md.append(f"\n**{caption}**\n")
                hb.append(f"<p><strong>{html.escape(caption)}</strong></p>")
            md.append("\n" + markdown_table(rows))
            hb.append(_html_table(rows))
        for name, fig, caption in sec.figures:
            stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
            if stem in used:
                raise RadJEPALabError(f"write_report: two figures are named {name!r}")
            used.add(stem)
            rel = f"figures/{stem}.png"
            fig.savefig(out / rel, dpi=dpi)
            md.append(f"\n![{caption or name}]({rel})\n")
            if caption:
                md.append(f"\n_{caption}_\n")
            hb.append(f"<figure><img src='{rel}' alt='{html.escape(caption or name)}'>"
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    hb.append("</body></html>")
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    index = out / "index.html"
    index.write_text("\n".join(hb), encoding="utf-8")
    return index


def comparison_table(rows: Sequence[Any], probe: str | None = None) -> list[dict[str, str]]:
    """``ComparisonRow`` objects -> printable rows (macro AUPRC with CI, paired delta, p)."""
    out = []
    for r in rows:
        if probe is not None and r.probe != probe:
            continue
        d = r.delta_vs_baseline
        out.append(
            {
                "features": r.name,
                "probe": r.probe,
                "macro AUPRC [95% CI]": str(r.macro_auprc),
                "macro AUROC": f"{r.macro_auroc.estimate:.3f}",
                "baseline": r.baseline or "—",
                "Δ AUPRC vs baseline [95% CI]": (
                    f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" if d else "—"
                ),
                "p": f"{r.p_value:.3f}" if r.p_value is not None else "",
                "kNN acc": f"{r.knn_accuracy:.3f}" if r.knn_accuracy is not None else "",
            }
        )
    return out
