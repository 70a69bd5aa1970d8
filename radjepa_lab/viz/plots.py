"""Charts: training curves, embedding scatter, probe bars with CIs, PR curves, retrieval table."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radjepa_lab.viz.images import new_figure, titled

__all__ = [
    "plot_embedding",
    "plot_embeddings_side_by_side",
    "plot_pr_curves",
    "plot_probe_bars",
    "plot_ratio_histograms",
    "plot_retrieval_table",
    "plot_run_curves",
    "plot_training_curves",
]

_CURVE_LABELS = {
    "loss": "JEPA loss",
    "lr": "learning rate",
    "wd": "weight decay",
    "momentum": "EMA momentum",
    "rankme": "RankMe (effective rank)",
    "feat_std": "std of L2-normalised features",
    "imgs_per_s": "images / s",
    "teacher_entropy": "DINO teacher target entropy (nats)",
}
# The RankMe-split monitors carry their k in the key (train.MONITOR_TOP_K), so match the pattern.
_SPLIT_LABELS = (
    (re.compile(r"rankme_tail(\d+)$"), "RankMe without the {} leading directions"),
    (re.compile(r"top(\d+)_share$"), "share of the {} leading singular values"),
)


def _curve_label(key: str) -> str:
    if key in _CURVE_LABELS:
        return _CURVE_LABELS[key]
    for pattern, text in _SPLIT_LABELS:
        if m := pattern.match(key):
            return text.format(m.group(1))
    return key


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("loss", "lr", "momentum", "rankme", "feat_std"),
    title: str = "Pretraining",
    x_key: str = "step",
):
    """One panel per logged metric present in ``history`` (list of dicts, e.g. metrics.jsonl).

    RankMe falling while the loss falls is the signature of collapse; the panels sit side by
    side so it is seen at a glance.
    """
    present = [k for k in keys if any(k in h and h[k] is not None for h in history)]
    if not present:
        present = ["loss"]
    fig, axes = new_figure(1, len(present), (3.2, 2.8))
    for ax, k in zip(axes[0], present, strict=True):
        pts = [(h.get(x_key, i), h[k]) for i, h in enumerate(history) if h.get(k) is not None]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, marker="." if len(x) < 30 else None)
        if k == "loss" and pts and min(p[1] for p in pts) > 0:
            ax.set_yscale("log")
        ax.set_xlabel(x_key)
        ax.set_ylabel(_curve_label(k))  # one label per panel (a title too crowded the suptitle)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_run_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    keys: Sequence[str] = ("loss", "rankme", "feat_std"),
    title: str = "Pretraining runs side by side",
    x_key: str = "step",
):
    """One panel per metric, one line per run (e.g. the three objectives of notebook 09).

    Losses of different objectives are in different units (cross-entropy in nats, MSE of
    normalised pixels, smooth-L1 of layer-normed features), so each run's loss is drawn relative
    to its first logged value; the monitors (RankMe, feature std) are the same measurement for
    every run. A panel is drawn for each key that some run logged.
    """
    present = [k for k in keys if any(h.get(k) is not None for hist in histories.values()
                                      for h in hist)]
    present = present or ["loss"]
    fig, axes = new_figure(1, len(present), (3.4, 2.9))
    for ax, k in zip(axes[0], present, strict=True):
        for i, (name, hist) in enumerate(histories.items()):
            pts = [(h.get(x_key, j), h[k]) for j, h in enumerate(hist) if h.get(k) is not None]
            if not pts:
                continue
            x, y = (np.asarray(v, dtype=float) for v in zip(*pts, strict=True))
            if k == "loss" and y[0] > 0:
                y = y / y[0]
            ax.plot(x, y, color=f"C{i}", label=name, marker="." if len(x) < 30 else None)
            if k == "teacher_entropy":
                top = [h.get("teacher_entropy_max") for h in hist if h.get("teacher_entropy_max")]
                if top:
                    ax.axhline(top[-1], color=f"C{i}", ls=":", lw=1, label="log K (uniform)")
        ax.set_xlabel(x_key)
        ax.set_ylabel("loss / its first logged value" if k == "loss" else _curve_label(k))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def plot_embeddings_side_by_side(
    projections: Mapping[str, Any],
    values: Sequence[Any] | np.ndarray,
    label: str = "label",
    title: str = "Image embeddings side by side",
    synthetic: bool = False,
):
    """One scatter per model of 2-D coordinates (arrays or ``analysis.embed.Projection``) of
    the SAME images, coloured by the same ``values`` (few distinct values: categories)."""
    values = np.asarray(values)
    uniq = np.unique(values[~_isnan(values)]) if values.dtype.kind == "f" else np.unique(values)
    fig, axes = new_figure(1, len(projections), (3.6, 3.4))
    for ax, (name, proj) in zip(axes[0], projections.items(), strict=True):
        method = (getattr(proj, "method", "") or "2-D").upper()
        coords = np.asarray(getattr(proj, "coords", proj))
        if len(uniq) <= 10:
            for i, u in enumerate(uniq):
                sel = values == u
                ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.7, color=f"C{i % 10}",
                           label=str(u))
            ax.legend(title=label, fontsize=6, markerscale=2)
        else:
            sc = ax.scatter(coords[:, 0], coords[:, 1], c=values.astype(float), s=6,
                            cmap="viridis")
            fig.colorbar(sc, ax=ax, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
    fig.suptitle(titled(f"{title}, coloured by {label}", synthetic))
    return fig


def plot_embedding(
    coords: Any,
    values: Sequence[Any] | np.ndarray,
    label: str = "label",
    method: str | None = None,
    title: str = "Image embeddings",
    synthetic: bool = False,
    categorical: bool | None = None,
):
    """Scatter of 2-D coordinates (array or ``analysis.embed.Projection``) coloured by ``values``.

    Few distinct values (<= 10) are drawn as categories with a legend, otherwise a colourbar.
    """
    if hasattr(coords, "coords"):
        method = method or coords.method
        coords = coords.coords
    coords = np.asarray(coords)
    values = np.asarray(values)
    uniq = np.unique(values[~_isnan(values)]) if values.dtype.kind == "f" else np.unique(values)
    if categorical is None:
        categorical = len(uniq) <= 10
    fig, axes = new_figure(1, 1, (5.0, 4.2))
    ax = axes[0, 0]
    if categorical:
        for i, u in enumerate(uniq):
            sel = values == u
            ax.scatter(coords[sel, 0], coords[sel, 1], s=8, alpha=0.7, color=f"C{i % 10}",
                       label=str(u))
        ax.legend(title=label, fontsize=7, markerscale=2)
    else:
        sc = ax.scatter(coords[:, 0], coords[:, 1], c=values.astype(float), s=8, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=label)
    m = (method or "").upper() or "2-D"
    ax.set_xlabel(f"{m} 1")
    ax.set_ylabel(f"{m} 2")
    import textwrap

    full = titled(f"{title} ({m}), coloured by {label}", synthetic)
    ax.set_title("\n".join(textwrap.wrap(full, 58)), fontsize=9)  # never cut off at the edges
    return fig


def _isnan(v: np.ndarray) -> np.ndarray:
    return np.isnan(v) if v.dtype.kind == "f" else np.zeros(v.shape, bool)


def _row(r: Any) -> dict[str, Any]:
    return r.to_dict() if hasattr(r, "to_dict") else dict(r)


def _ci(v: Any) -> tuple[float, float, float]:
    if isinstance(v, Mapping):
        return v["estimate"], v["low"], v["high"]
    return v.estimate, v.low, v.high


def plot_probe_bars(
    rows: Sequence[Any],
    probe: str = "linear",
    title: str = "Linear probe, macro AUPRC with 95% bootstrap CI",
    per_class: bool = True,
    synthetic: bool = False,
):
    """Bars of macro AUPRC (with CI error bars) per encoder, plus per-class AUPRC if asked.

    ``rows``: ``analysis.baselines.ComparisonRow`` objects or their ``to_dict()`` dicts.
    """
    rows = [_row(r) for r in rows if _row(r)["probe"] == probe]
    ncols = 2 if per_class else 1
    fig, axes = new_figure(1, ncols, (max(4.0, 0.9 * len(rows) + 2), 3.6))
    ax = axes[0, 0]
    names = [r["name"] for r in rows]
    est = np.array([_ci(r["macro_auprc"])[0] for r in rows])
    lo = np.array([_ci(r["macro_auprc"])[1] for r in rows])
    hi = np.array([_ci(r["macro_auprc"])[2] for r in rows])
    x = np.arange(len(rows))
    ax.bar(x, est, color=[f"C{i % 10}" for i in x])
    ax.errorbar(x, est, yerr=[est - lo, hi - est], fmt="none", ecolor="black", capsize=4)
    for i, r in enumerate(rows):
        d = r.get("delta_vs_baseline")
        if d:
            e, dl, dh = _ci(d)
            star = "*" if (dl > 0 or dh < 0) else ""
            ax.text(i, hi[i] + 0.01, f"Δ{e:+.3f}{star}", ha="center", fontsize=7)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("macro AUPRC")
    ax.set_ylim(0, min(1.05, float(np.nanmax(hi)) + 0.1) if len(hi) else 1)
    ax.set_title(titled(title, synthetic), fontsize=9)
    if per_class and rows:
        classes = list(rows[0]["auprc"])
        w = 0.8 / max(1, len(rows))
        ax2 = axes[0, 1]
        for i, r in enumerate(rows):
            ax2.bar(np.arange(len(classes)) + i * w, [r["auprc"][c] for c in classes], w,
                    label=r["name"], color=f"C{i % 10}")
        ax2.set_xticks(np.arange(len(classes)) + w * (len(rows) - 1) / 2, classes, rotation=30,
                       ha="right", fontsize=8)
        ax2.set_ylabel("AUPRC")
        ax2.set_title("per finding", fontsize=9)
        ax2.legend(fontsize=6)
    return fig


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    prevalence: Mapping[str, float] | None = None,
    title: str = "Precision-recall curves",
    synthetic: bool = False,
):
    """PR curves from ``analysis.metrics.pr_curves``; dotted lines mark chance (prevalence)."""
    fig, axes = new_figure(1, 1, (5.0, 4.2))
    ax = axes[0, 0]
    for i, (c, (rec, prec, ap)) in enumerate(curves.items()):
        ax.step(rec, prec, where="post", color=f"C{i % 10}", label=f"{c} (AP {ap:.2f})")
        if prevalence and c in prevalence:
            ax.axhline(prevalence[c], color=f"C{i % 10}", ls=":", lw=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(titled(title, synthetic), fontsize=9)
    return fig


def plot_retrieval_table(result: Any, n: int = 5, width: int = 60, synthetic: bool = False):
    """Reference vs retrieved report for the first ``n`` test images, as a table figure."""
    import textwrap

    rows = result.rows(n)
    cell = [
        [
            "\n".join(textwrap.wrap(r["reference"], width)),
            "\n".join(textwrap.wrap(r["retrieved"], width)),
            f"{r['similarity']:.2f}",
            f"{r['rouge_l']:.2f}",
        ]
        for r in rows
    ]
    lines = max([c.count("\n") + 1 for row in cell for c in row[:2]] + [1])
    fig, axes = new_figure(1, 1, (11.0, 0.5 + 0.16 * lines * max(1, len(rows))))
    ax = axes[0, 0]
    ax.set_axis_off()
    t = ax.table(
        cellText=cell,
        colLabels=["true report", "retrieved report", "cosine", "ROUGE-L"],
        colWidths=[0.42, 0.42, 0.08, 0.08],
        loc="upper center",
        cellLoc="left",
    )
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    for (r, _c), c in t.get_celld().items():
        if r > 0:
            c.set_height(0.9 / max(1, len(rows)))
    f1 = result.finding_f1.get("macro", float("nan"))
    ax.set_title(
        titled(
            f"Report retrieval: ROUGE-L {result.rouge_l:.3f}, BLEU-4 {result.bleu4:.3f}, "
            f"finding macro-F1 {f1:.3f}",
            synthetic,
        ),
        fontsize=9,
    )
    return fig


def plot_ratio_histograms(hists: Mapping[str, np.ndarray], title: str = "Mask size per sample"):
    """Histograms from ``masks.ratio_histograms``: context before/after equalisation, targets."""
    edges = np.asarray(hists["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig, axes = new_figure(1, 1, (5.0, 3.4))
    ax = axes[0, 0]
    labels = {
        "context_raw": "context block (before equalising)",
        "context": "context the encoder sees",
        "target": "union of target blocks",
    }
    for i, k in enumerate(("context_raw", "context", "target")):
        if f"{k}_hist" in hists:
            ax.bar(centers, hists[f"{k}_hist"], width, alpha=0.5, label=labels[k], color=f"C{i}")
    ax.set_xlabel("fraction of patches")
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig
