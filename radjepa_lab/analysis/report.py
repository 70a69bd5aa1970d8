"""Write analysis results as a small static report: PNG figures + report.md + index.html.

:func:`probe_report` is what ``radjepa-lab probe CHECKPOINT`` and ``make demo`` run: it probes
a checkpoint against random inits of the same architecture and raw pixels on held-out data,
with bootstrap CIs and paired deltas, and adds one figure each for latents, attention and
UMAP. The writer itself (:func:`write_report`) knows nothing about JEPA: it takes sections of
text, tables and matplotlib figures.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "ReportSection",
    "comparison_table",
    "markdown_table",
    "probe_report",
    "suite_to_json",
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


# --------------------------------------------------------------------------------------------
# tables from analysis results


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


def suite_to_json(suite: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a ``baselines.SuiteResult`` (no arrays)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, np.ndarray):
            return None
        return v

    return clean(
        {
            "rows": [r.to_dict() for r in suite.rows],
            "baseline": suite.baseline,
            "dice": suite.dice,
            "rankme": suite.rankme,
            "retrieval": {
                k: {"rouge_l": v.rouge_l, "bleu4": v.bleu4, "finding_f1": v.finding_f1}
                for k, v in suite.retrieval.items()
            },
        }
    )


# --------------------------------------------------------------------------------------------
# the probe report


def _model_config_like(encoder: Any) -> Any:
    """A ModelConfig with the encoder's shape (for random baselines of imported models)."""
    from radjepa_lab.config import ModelConfig

    blk = encoder.blocks[0]
    d = encoder.embed_dim
    heads = encoder.num_heads
    return ModelConfig(
        img_size=encoder.pos_grid[0] * encoder.patch_size, patch_size=encoder.patch_size,
        in_chans=encoder.in_chans, embed_dim=d, depth=len(encoder.blocks), num_heads=heads,
        mlp_ratio=blk.mlp.fc1.out_features / d, pred_embed_dim=max(4, (d // 2) // 4 * 4),
        pred_num_heads=heads, qkv_bias=blk.attn.qkv.bias is not None,
    )


def _try_jepa(path: Path) -> Any:
    try:
        from radjepa_lab.notebook import load_jepa

        return load_jepa(path)
    except Exception:  # noqa: BLE001 - only kit checkpoints have a predictor; others are fine
        return None


def probe_report(
    checkpoint: str | Path,
    data: str = "phantoms",
    out_dir: str | Path = "runs/probe",
    n_train: int = 1500,
    n_test: int = 500,
    seed: int = 1,
    pools: Sequence[str] = ("2x2",),
    n_resamples: int = 1000,
    umap_method: str = "umap",
    seg_epochs: int = 30,
    device: str = "auto",
    progress: bool = True,
    title: str | None = None,
) -> Path:
    """Probe ``checkpoint`` against random inits and raw pixels; write a report folder.

    ``data``: ``"phantoms"`` (held-out phantoms generated from seed ``10_000 + seed``, never
    the pretraining seeds) or a folder / CSV manifest with labels (split 75/25; no
    segmentation or retrieval). Returns the path of ``index.html``; ``results.json`` sits
    beside it.
    """
    import torch

    from radjepa_lab.analysis.attention import attention_maps
    from radjepa_lab.analysis.baselines import (
        dataset_eval_data,
        evaluate_suite,
        phantom_eval_data,
        random_encoder,
    )
    from radjepa_lab.analysis.embed import project_2d, resolve_dataset
    from radjepa_lab.analysis.latents import predict_latents
    from radjepa_lab.analysis.metrics import pr_curves
    from radjepa_lab.models import load_encoder
    from radjepa_lab.viz import (
        plot_attention_heads,
        plot_embedding,
        plot_latents,
        plot_pr_curves,
        plot_probe_bars,
        plot_retrieval_table,
        plot_rollout,
        plot_segmentation,
        plot_training_curves,
    )

    path = Path(checkpoint)
    out = Path(out_dir)
    enc = load_encoder(path).eval()
    jepa = _try_jepa(path)
    mcfg = jepa.config.model if jepa is not None else _model_config_like(enc)
    size = mcfg.img_size
    if str(data).startswith("phantoms"):
        rest = str(data)[len("phantoms") :].strip("[]:")
        if rest:
            n_total = int(rest)
            n_test = max(1, n_total // 4)
            n_train = n_total - n_test
        px = jepa.config.phantom_px if jepa is not None else size
        ev = phantom_eval_data(n_train, n_test, seed=10_000 + 2 * seed, size=size, phantom_size=px)
    else:
        ev = dataset_eval_data(resolve_dataset(data, size, seed), size, seed=seed)
    encoders = {
        "checkpoint": enc,
        "random (kit init)": random_encoder(mcfg, "kit", seed=seed),
        "random (torch init)": random_encoder(mcfg, "torch_default", seed=seed),
    }
    suite = evaluate_suite(
        encoders, ev, pools=pools, baseline=["random (kit init)", "random (torch init)"],
        n_resamples=n_resamples, seed=seed, seg_epochs=seg_epochs, device=device,
        progress=progress,
    )
    syn = ev.synthetic
    lin = [r for r in suite.rows if r.probe == "linear"]
    knn = [r for r in suite.rows if r.probe == "knn"]
    main = f"checkpoint [{pools[0]}]"
    sections = []
    delta_rows = [r for r in lin if r.name.startswith("checkpoint")]
    summary = [
        f"Checkpoint: {path}",
        f"Data: {'SYNTHETIC phantoms' if syn else data}; {len(ev.train_labels)} train / "
        f"{len(ev.test_labels)} test images at {size} px; {n_resamples} bootstrap resamples.",
    ]
    for r in delta_rows:
        d = r.delta_vs_baseline
        verdict = ("significantly better than" if d and d.low > 0 else
                   "significantly worse than" if d and d.high < 0 else "not distinguishable from")
        summary.append(f"- {r.name}: macro AUPRC {r.macro_auprc}; {verdict} {r.baseline} "
                       f"(Δ {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}], p={r.p_value:.3f})"
                       if d else f"- {r.name}: macro AUPRC {r.macro_auprc}")
    summary_text = "\n".join(summary[:2]) + "\n\n" + "\n".join(summary[2:])
    sections.append(ReportSection(
        "Linear probe (frozen features)",
        summary_text,
        tables=[("Linear probe, paired bootstrap Δ vs the stronger random init",
                 comparison_table(lin)),
                ("Per-finding AUPRC (linear probe)",
                 [{"features": r.name, **{k: v for k, v in r.auprc.items()}} for r in lin])],
        figures=[("probe_bars", plot_probe_bars(lin, synthetic=syn), "Macro AUPRC with 95% CI"),
                 ("pr_curves", plot_pr_curves(
                     pr_curves(ev.test_labels, suite.results[(main, "linear")].scores, ev.classes),
                     prevalence=dict(zip(ev.classes, np.nanmean(ev.test_labels, 0), strict=True)),
                     title="PR curves of the checkpoint's linear probe", synthetic=syn), "")],
    ))
    sections.append(ReportSection(
        "kNN probe (DINO protocol: cosine, k=20, T=0.07)",
        tables=[("", comparison_table(knn))],
    ))
    if suite.dice:
        sec = ReportSection(
            "Segmentation probe (linear 1x1 head on patch tokens)",
            tables=[("Dice per structure", [{"encoder": k, **v} for k, v in suite.dice.items()])],
        )
        if "checkpoint" in suite.seg_pred:
            sec.figures.append(("segmentation", plot_segmentation(
                ev.test_images[0], suite.seg_pred["checkpoint"][0], ev.test_masks[0],
                ev.structures, {k: v for k, v in suite.dice["checkpoint"].items()},
                synthetic=syn), ""))
        sections.append(sec)
    if suite.retrieval:
        rows = [{"encoder": k, "ROUGE-L": v.rouge_l, "BLEU-4": v.bleu4,
                 "finding F1 (macro)": v.finding_f1.get("macro", float("nan")),
                 "finding F1 (micro)": v.finding_f1.get("micro", float("nan"))}
                for k, v in suite.retrieval.items()]
        sections.append(ReportSection(
            "Report generation by retrieval (nearest training report)",
            tables=[("", rows)],
            figures=[("retrieval", plot_retrieval_table(suite.retrieval["checkpoint"],
                                                        synthetic=syn), "")],
        ))
    # pictures: UMAP, attention, latents, training curves
    pics = ReportSection("Looking inside the encoder")
    test_feats = suite.features[main].test
    proj = project_2d(test_feats, method=umap_method, seed=seed)
    col = ev.classes[0]
    pics.figures.append(("embedding", plot_embedding(
        proj, ev.test_labels[:, 0], col, synthetic=syn,
        title="Checkpoint embeddings of test images"), proj.note))
    att = attention_maps(enc, ev.test_images[0])
    q = (att.grid[0] // 2, att.grid[1] // 4)
    pics.figures.append(("attention_rollout", plot_rollout(att, q, synthetic=syn), ""))
    pics.figures.append(("attention_heads",
                         plot_attention_heads(att, q, layers=[len(enc.blocks) - 1],
                                              synthetic=syn), ""))
    if jepa is not None:
        with torch.no_grad():
            lat = predict_latents(jepa.encoder, jepa.predictor, jepa.target_encoder,
                                  ev.test_images[0], mask_cfg=jepa.config.masks, seed=seed)
        pics.figures.append(("latents", plot_latents(lat, synthetic=syn),
                             f"mean cosine(predicted, target) = {lat.mean_cosine:.3f}"))
    metrics = path.parent / "metrics.jsonl"
    if metrics.exists():
        hist = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
        pics.figures.append(("training_curves", plot_training_curves(hist), ""))
        rk = [h["rankme"] for h in hist if h.get("rankme") is not None]
        if rk:
            pics.text = f"RankMe during pretraining: {rk[0]:.1f} at the first log, {rk[-1]:.1f} at the last."
    sections.append(pics)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(suite_to_json(suite), indent=1))
    name = title or f"RadJEPA Lab probe report — {path.name}"
    return write_report(out, ("SYNTHETIC — " if syn else "") + name, sections)
