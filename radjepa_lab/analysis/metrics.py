"""Classification metrics, bootstrap confidence intervals, paired tests and label-free quality.

Why our own percentile bootstrap instead of ``scipy.stats.bootstrap``: the kit's headline
numbers are *macro* AUPRC over several findings, and the comparison between two encoders must
resample the *same* test images for both (a paired test). We therefore draw the bootstrap
indices once (:func:`bootstrap_indices`) and reuse them for every encoder and every metric. That
also gives us the whole distribution of the difference, which we need for a p-value, and lets
us drop the rare resample in which a class has only one label value (AUPRC is undefined there)
instead of poisoning the interval with NaN. ``tests/test_analysis_metrics.py`` checks that for
a plain mean our interval agrees with ``scipy.stats.bootstrap(method="percentile")``.

The label-free quality numbers (:func:`rankme`, :func:`rankme_split`, :func:`feature_std`) are
the training monitors' own (:mod:`radjepa_lab.monitors`), re-exported here so an analysis and
``metrics.jsonl`` always agree. scikit-learn is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radjepa_lab.errors import RadJEPALabError
from radjepa_lab.monitors import feature_std, rankme, rankme_split  # label-free quality

__all__ = [
    "CI",
    "ClassificationMetrics",
    "PairedResult",
    "as_numpy",
    "average_precision",
    "bootstrap_ci",
    "bootstrap_indices",
    "classification_metrics",
    "count_significant",
    "feature_std",
    "macro_auprc",
    "macro_auroc",
    "paired_bootstrap",
    "per_class_metric",
    "pr_curves",
    "rankme",
    "rankme_split",
    "roc_auc",
]


def as_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array (accepts torch tensors without importing torch here)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------
# per-class metrics


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """AUPRC as step-wise average precision; equals ``sklearn.metrics.average_precision_score``.

    A vectorised numpy version, because the bootstrap calls it thousands of times and sklearn's
    input validation dominates at that scale (tested against sklearn, ties included).
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    n_pos = y.sum()
    if n_pos == 0 or n_pos == y.size:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUROC via the Mann-Whitney U statistic with average ranks for ties (= sklearn's value)."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    ranks = np.empty(y.size)
    # average rank within each tie group
    starts = np.r_[0, np.flatnonzero(np.diff(ss)) + 1]
    ends = np.r_[starts[1:], ss.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def per_class_metric(
    y_true: np.ndarray, y_score: np.ndarray, metric: str = "auprc"
) -> np.ndarray:
    """Per-class AUROC or AUPRC for multi-label arrays ``[N, F]``.

    Rows with an unknown (NaN) label are ignored for that class only. A class whose known labels
    all take one value gets NaN (the metric is undefined), never a made-up 0.5.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    if y_true.shape != y_score.shape:
        raise RadJEPALabError(
            f"per_class_metric: y_true {y_true.shape} and y_score {y_score.shape} differ in shape"
        )
    fn = {"auprc": average_precision, "auroc": roc_auc}.get(metric)
    if fn is None:
        raise RadJEPALabError(f"per_class_metric: metric must be 'auprc' or 'auroc', got {metric!r}")
    out = np.full(y_true.shape[1], np.nan)
    for j in range(y_true.shape[1]):
        known = ~np.isnan(y_true[:, j])
        if known.any():
            out[j] = fn(y_true[known, j], y_score[known, j])
    return out


def macro_auprc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean AUPRC over the classes where it is defined."""
    v = per_class_metric(y_true, y_score, "auprc")
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def macro_auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean AUROC over the classes where it is defined."""
    v = per_class_metric(y_true, y_score, "auroc")
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


# --------------------------------------------------------------------------------------------
# bootstrap


@dataclass(frozen=True)
class CI:
    """A point estimate with a percentile-bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n_resamples: int = 0

    def __str__(self) -> str:  # e.g. "0.612 [0.588, 0.637]"
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def covers(self, value: float) -> bool:
        """True when ``value`` lies inside the interval."""
        return self.low <= value <= self.high


def bootstrap_indices(
    n: int, n_resamples: int = 1000, seed: int = 0, strata: np.ndarray | None = None
) -> np.ndarray:
    """Draw ``[n_resamples, n]`` resampling indices with a seeded generator.

    Drawing the indices once and sharing them is what makes a comparison *paired*. With
    ``strata`` (e.g. a label column) each stratum is resampled within itself, which keeps rare
    classes present in every resample.
    """
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n))
    strata = np.asarray(strata)
    out = np.empty((n_resamples, n), dtype=np.int64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        pick = rng.integers(0, members.size, size=(n_resamples, members.size))
        out[:, members] = members[pick]
    return out


def _percentile_ci(dist: np.ndarray, level: float) -> tuple[float, float]:
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(dist, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> CI:
    """Percentile bootstrap CI of ``metric(*arrays)`` resampling the first axis (test samples).

    ``metric`` receives the arrays indexed by one resample, e.g. ``macro_auprc(y[idx], s[idx])``.
    Pass ``indices`` from :func:`bootstrap_indices` to share resamples with other calls.
    Resamples where the metric is undefined (NaN) are dropped; see the module docstring.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise RadJEPALabError("bootstrap_ci: all arrays must have the same first dimension")
    if indices is None:
        indices = bootstrap_indices(n, n_resamples, seed)
    est = float(metric(*arrays))
    dist = np.array([metric(*(a[idx] for a in arrays)) for idx in indices], dtype=np.float64)
    lo, hi = _percentile_ci(dist, level)
    return CI(est, lo, hi, level, int(np.isfinite(dist).sum()))


@dataclass(frozen=True)
class PairedResult:
    """Paired bootstrap comparison of encoder A against encoder B on the same test set."""

    name_a: str
    name_b: str
    metric_a: float
    metric_b: float
    delta: CI  # A - B
    p_value: float  # two-sided, H0: delta == 0

    @property
    def significant(self) -> bool:
        """The CI of the difference excludes 0."""
        return self.delta.low > 0 or self.delta.high < 0

    @property
    def a_better(self) -> bool:
        """A is significantly better than B (CI of A - B entirely above 0)."""
        return self.delta.low > 0


def paired_bootstrap(
    y_true: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float] = macro_auprc,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    indices: np.ndarray | None = None,
    names: tuple[str, str] = ("A", "B"),
) -> PairedResult:
    """Paired bootstrap test of ``metric(A) - metric(B)`` on one test set.

    The test images are resampled once per replicate and both encoders are scored on the same
    resample, so image difficulty cancels out of the difference. The p-value is the two-sided
    bootstrap p ``2 * min(P(d* <= 0), P(d* >= 0))`` with the +1 correction, so it is never 0.
    """
    y_true, scores_a, scores_b = (np.asarray(a) for a in (y_true, scores_a, scores_b))
    n = len(y_true)
    if len(scores_a) != n or len(scores_b) != n:
        raise RadJEPALabError(
            "paired_bootstrap: scores_a, scores_b and y_true must cover the same test samples"
        )
    if indices is None:
        indices = bootstrap_indices(n, n_resamples, seed)
    ma, mb = float(metric(y_true, scores_a)), float(metric(y_true, scores_b))
    d = np.array(
        [metric(y_true[i], scores_a[i]) - metric(y_true[i], scores_b[i]) for i in indices]
    )
    d = d[np.isfinite(d)]
    lo, hi = _percentile_ci(d, level)
    b = d.size
    p = 2 * min((np.sum(d <= 0) + 1) / (b + 1), (np.sum(d >= 0) + 1) / (b + 1))
    return PairedResult(names[0], names[1], ma, mb, CI(ma - mb, lo, hi, level, b), float(min(p, 1)))


def count_significant(results: Sequence[PairedResult]) -> tuple[int, int]:
    """Return ``(k, n)``: A is significantly better than B in ``k`` of ``n`` settings.

    This is how the RadJEPA paper summarises many comparisons ("better in k of n").
    """
    return sum(r.a_better for r in results), len(results)


# --------------------------------------------------------------------------------------------
# everything at once


@dataclass
class ClassificationMetrics:
    """Per-class and macro AUROC/AUPRC, with bootstrap CIs for the macro values."""

    classes: list[str]
    auroc: dict[str, float]
    auprc: dict[str, float]
    macro_auroc: CI
    macro_auprc: CI
    prevalence: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    auprc_ci: dict[str, CI] = field(default_factory=dict)

    def as_rows(self) -> list[dict[str, Any]]:
        """One dict per class, convenient for tables and JSON."""
        rows = []
        for c in self.classes:
            ci = self.auprc_ci.get(c)
            rows.append(
                {
                    "class": c,
                    "auroc": self.auroc[c],
                    "auprc": self.auprc[c],
                    "auprc_low": ci.low if ci else float("nan"),
                    "auprc_high": ci.high if ci else float("nan"),
                    "prevalence": self.prevalence[c],
                    "skipped": self.skipped.get(c, ""),
                }
            )
        return rows


def classification_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    classes: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    indices: np.ndarray | None = None,
    per_class_ci: bool = True,
) -> ClassificationMetrics:
    """AUROC/AUPRC per class and macro, with percentile-bootstrap 95% CIs.

    Classes with only one known label value are skipped (reported in ``.skipped`` with the
    reason) and excluded from the macro average, so the macro number never silently includes
    an undefined class.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    classes = list(classes)
    if y_true.shape[1] != len(classes):
        raise RadJEPALabError(
            f"classification_metrics: {len(classes)} class names for {y_true.shape[1]} label columns"
        )
    skipped: dict[str, str] = {}
    keep = []
    for j, c in enumerate(classes):
        known = y_true[~np.isnan(y_true[:, j]), j]
        if known.size == 0:
            skipped[c] = "no known labels in the test set"
        elif known.min() == known.max():
            skipped[c] = f"all known test labels are {int(known[0])}; AUROC/AUPRC undefined"
        else:
            keep.append(j)
    roc = per_class_metric(y_true, y_score, "auroc")
    pr = per_class_metric(y_true, y_score, "auprc")
    if indices is None:
        indices = bootstrap_indices(len(y_true), n_resamples, seed)
    yk, sk = y_true[:, keep], y_score[:, keep]
    if keep:
        m_pr = bootstrap_ci(macro_auprc, yk, sk, indices=indices)
        m_roc = bootstrap_ci(macro_auroc, yk, sk, indices=indices)
    else:
        nan = float("nan")
        m_pr = m_roc = CI(nan, nan, nan)
    pr_ci: dict[str, CI] = {}
    if per_class_ci:
        for j in keep:
            pr_ci[classes[j]] = bootstrap_ci(
                macro_auprc, y_true[:, [j]], y_score[:, [j]], indices=indices
            )
    prev = {c: float(np.nanmean(y_true[:, j])) for j, c in enumerate(classes)}
    return ClassificationMetrics(
        classes=classes,
        auroc={c: float(roc[j]) for j, c in enumerate(classes)},
        auprc={c: float(pr[j]) for j, c in enumerate(classes)},
        macro_auroc=m_roc,
        macro_auprc=m_pr,
        prevalence=prev,
        skipped=skipped,
        auprc_ci=pr_ci,
    )


def pr_curves(
    y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Precision-recall curve per class: ``{class: (recall, precision, AUPRC)}``.

    Classes with one known label value are left out (the curve is undefined).
    """
    from sklearn.metrics import precision_recall_curve

    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    out = {}
    for j, c in enumerate(classes):
        known = ~np.isnan(y_true[:, j])
        yt = y_true[known, j]
        if yt.size == 0 or yt.min() == yt.max():
            continue
        prec, rec, _ = precision_recall_curve(yt, y_score[known, j])
        out[c] = (rec, prec, average_precision(yt, y_score[known, j]))
    return out
