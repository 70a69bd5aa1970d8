"""Collapse monitors: RankMe and its split, feature spread, verdicts, and the metrics log.

A joint-embedding method can "succeed" at its loss by mapping every image to the same point.
These numbers tell whether that is happening while a run trains (``train.py`` logs them to
``metrics.jsonl``), in an analysis notebook, and in the quality benchmark, from ONE
implementation, so the three never disagree. Nothing here depends on the trainer.

``metrics.jsonl`` holds one JSON object per logged step, and event records such as
``{"step": s, "event": "config_change", "changes": {...}}`` (a resumed run that changed its
config) that carry no loss or RankMe; every reader here takes the keys it needs with ``.get``.
:func:`read_metrics` is its only reader; it skips a line torn by a crash mid-write instead of
failing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from radjepa_lab.atomic import atomic_write
from radjepa_lab.errors import OutputError, RadJEPALabError

__all__ = [
    "METRICS_NAME",
    "MONITOR_TOP_K",
    "RANKME_DIP_FLOOR",
    "TAIL_KEY",
    "TOP_SHARE_KEY",
    "append_metrics",
    "collapse_monitors",
    "collapse_summary",
    "feature_std",
    "rankme",
    "rankme_dipped",
    "rankme_split",
    "read_metrics",
    "summarize_history",
    "write_metrics",
]

METRICS_NAME = "metrics.jsonl"
# RankMe is split after this many leading directions (rankme_split).
MONITOR_TOP_K = 5
# metrics.jsonl keys of that split; readers use these names so changing k changes them all.
TOP_SHARE_KEY = f"top{MONITOR_TOP_K}_share"
TAIL_KEY = f"rankme_tail{MONITOR_TOP_K}"
# A RankMe log below this fraction of the first one counts as a dip: 1.0 reads "does not fall
# below its init value" strictly.
RANKME_DIP_FLOOR = 1.0


# ----------------------------------------------------------------------------- the numbers


def _feature_matrix(features: Any, name: str) -> torch.Tensor:
    """``features`` as a float ``[N>=2, D]`` tensor (numpy input becomes float64)."""
    if isinstance(features, torch.Tensor):
        f = features.detach()
        f = f.double() if f.dtype == torch.float64 else f.float()
    else:
        f = torch.from_numpy(np.asarray(features, dtype=np.float64))
    if f.ndim != 2 or f.shape[0] < 2:
        raise RadJEPALabError(f"{name}: features must be [N>=2, D], got shape {tuple(f.shape)}")
    return f


def _singular_values(f: torch.Tensor, center: bool) -> torch.Tensor:
    if center:
        f = f - f.mean(0, keepdim=True)
    return torch.linalg.svdvals(f)


def _entropy_rank(s: torch.Tensor, eps: float) -> float:
    if float(s.sum()) <= 0:
        return 1.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def rankme(features: Any, center: bool = True, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of normalised singular values.

    A smooth "effective rank" of an embedding set ``[N, D]`` (numpy or torch), from 1
    (collapsed) to min(N, D). ``center=True`` removes the mean first, so a large shared offset
    (e.g. from position embeddings) cannot hide collapse.
    """
    return _entropy_rank(_singular_values(_feature_matrix(features, "rankme"), center), eps)


@torch.no_grad()
def rankme_split(features: Any, k: int = MONITOR_TOP_K, center: bool = True,
                 eps: float = 1e-7) -> dict[str, float]:
    """RankMe with the ``k`` leading directions split from the rest.

    A falling RankMe has two causes that call for different responses: dimensions dying
    (collapse), or a few learned directions growing faster than the others (SSL learns its
    leading directions first). Collapse shrinks ``rankme_tail``, the RankMe of the singular
    values after the first ``k``; growth of the leading directions only raises ``top_share``,
    their share of the singular-value sum.
    """
    if k < 1:
        raise RadJEPALabError(f"rankme_split: k must be >= 1, got {k}")
    s = _singular_values(_feature_matrix(features, "rankme_split"), center)
    if s.numel() <= k:
        raise RadJEPALabError(
            f"rankme_split: need more than k={k} singular values, features have {s.numel()}"
        )
    total = float(s.sum())
    return {
        "rankme": _entropy_rank(s, eps),
        "top_share": float(s[:k].sum()) / total if total > 0 else 1.0,
        "rankme_tail": _entropy_rank(s[k:], eps),
    }


@torch.no_grad()
def feature_std(features: Any) -> float:
    """Mean per-dimension std of L2-normalised features: ~1/sqrt(D) healthy, -> 0 collapsed
    (the collapse SimSiam's authors monitor)."""
    f = F.normalize(_feature_matrix(features, "feature_std"), dim=1)
    return float(f.std(0, unbiased=False).mean())


def rankme_dipped(first: float, lowest: float) -> bool:
    """Whether the lowest RankMe log counts as a dip below the first (``RANKME_DIP_FLOOR``)."""
    return lowest < RANKME_DIP_FLOOR * first


@torch.no_grad()
def collapse_monitors(encoder: torch.nn.Module, images: torch.Tensor | None,
                      autocast: Any = None) -> dict[str, float]:
    """The logged monitors of ``encoder`` on a fixed image set: RankMe (and its split) and the
    feature std of mean-pooled tokens. ``autocast`` is the trainer's precision context."""
    if images is None:
        return {}
    from contextlib import nullcontext

    with autocast or nullcontext():
        feats = torch.cat([encoder(chunk).mean(1) for chunk in images.split(256)])
    out = {"feat_std": feature_std(feats), "feat_std_ref": 1.0 / math.sqrt(feats.shape[1])}
    if min(feats.shape) > MONITOR_TOP_K + 1:  # a tiny monitor set has no tail to speak of
        split = rankme_split(feats, k=MONITOR_TOP_K)  # one SVD gives RankMe and its split
        out["rankme"] = split["rankme"]
        out[TOP_SHARE_KEY] = split["top_share"]
        out[TAIL_KEY] = split["rankme_tail"]
    else:
        out["rankme"] = rankme(feats)
    return out


# ----------------------------------------------------------------------------- verdicts


def collapse_summary(history: list[dict[str, Any]], dim: int | None = None) -> str:
    """Plain-language collapse diagnosis from logged ``rankme`` / ``feat_std`` records.

    Rules (Garrido et al. 2023): RankMe that ends below its first logged value, or a feature
    std far below ``1/sqrt(D)``, signals (partial) collapse.
    """
    logged = [r for r in history if r.get("rankme") is not None]
    ranks = [r["rankme"] for r in logged]
    stds = [(r["feat_std"], r.get("feat_std_ref")) for r in history if r.get("feat_std")]
    if not ranks:
        return "no RankMe logged: cannot diagnose collapse."
    lines = [f"RankMe {ranks[0]:.1f} -> {ranks[-1]:.1f} (first -> last log)"]
    verdict = "healthy: RankMe ended at or above its first value"
    if ranks[-1] < ranks[0]:
        verdict = "WARNING: RankMe fell during training, the signature of (partial) collapse"
    low = min(range(len(ranks)), key=ranks.__getitem__)
    if rankme_dipped(ranks[0], ranks[low]):
        lines.append(f"dipped to {ranks[low]:.1f}")
        t0, t_low = logged[0].get(TAIL_KEY), logged[low].get(TAIL_KEY)
        if t0 is not None and t_low is not None:
            # a dip with a steady tail is a few learned directions growing, not lost dimensions
            kind = (f"only the {MONITOR_TOP_K} leading directions grew" if t_low >= 0.95 * t0
                    else "dimensions were lost")
            lines.append(f"RankMe without the {MONITOR_TOP_K} leading directions {t0:.1f} -> "
                         f"{t_low:.1f} at the dip: {kind}")
    if stds:
        s, ref = stds[-1]
        ref = ref or (1.0 / math.sqrt(dim) if dim else None)
        if ref:
            lines.append(f"feature std {s:.3f} vs healthy ~1/sqrt(D) = {ref:.3f}")
            if s < 0.25 * ref:
                verdict = "WARNING: features are nearly constant across images (collapse)"
    return " | ".join(lines) + f" -> {verdict}"


def summarize_history(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Start, lowest and end of RankMe (and its split) and of the loss over a run's log."""
    rk = [(h.get("step"), h["rankme"]) for h in history if h.get("rankme") is not None]
    if not rk:
        return {}
    loss = [h["loss"] for h in history if h.get("loss") is not None]
    i_min = min(range(len(rk)), key=lambda i: rk[i][1])
    out: dict[str, Any] = {
        "rankme_start": rk[0][1],
        "rankme_end": rk[-1][1],
        "rankme_min": rk[i_min][1],
        "rankme_min_step": rk[i_min][0],
        "rankme_steps": [rk[0][0], rk[-1][0]],
        "loss_start": loss[0] if loss else None,
        "loss_end": loss[-1] if loss else None,
        "steps_logged": history[-1].get("step"),
        "no_collapse": not rankme_dipped(rk[0][1], rk[i_min][1]),
        "rankme_rises": rk[-1][1] > rk[0][1],
    }
    tail = [(h.get("step"), h[TAIL_KEY], h[TOP_SHARE_KEY]) for h in history
            if h.get(TAIL_KEY) is not None]
    if tail:
        out.update({
            f"{TAIL_KEY}_start": tail[0][1], f"{TAIL_KEY}_end": tail[-1][1],
            f"{TAIL_KEY}_min": min(t for _, t, _ in tail),
            f"{TAIL_KEY}_at_rankme_min": next(
                (t for st, t, _ in tail if st == out["rankme_min_step"]), None),
            f"{TOP_SHARE_KEY}_start": tail[0][2], f"{TOP_SHARE_KEY}_end": tail[-1][2],
            f"{TOP_SHARE_KEY}_max": max(v for _, _, v in tail),
        })
    return out


# ----------------------------------------------------------------------------- metrics.jsonl


def read_metrics(path: str | Path, upto: int | None = None) -> list[dict[str, Any]]:
    """Every logged record of a ``metrics.jsonl`` (``[]`` if it does not exist).

    A line torn by a crash mid-write is skipped; with ``upto`` only records of steps
    ``<= upto`` are kept (a resumed run drops the lost future of its checkpoint).
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    if upto is not None:
        rows = [r for r in rows if isinstance(r.get("step", 0), int | float)
                and r.get("step", 0) <= upto]
    return rows


def append_metrics(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line (OutputError naming the file when the write fails)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise OutputError.from_os(e, path, "the metrics log") from e


def write_metrics(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Replace the log with ``rows`` atomically (:func:`radjepa_lab.atomic.atomic_write`): a
    crash during the rewrite leaves the old log whole."""
    text = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    atomic_write(path, lambda f: f.write(text), "the metrics log")