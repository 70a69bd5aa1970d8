"""Probes on frozen features: a multi-label linear probe and the DINO kNN classifier.

A probe answers "is the finding *linearly* (or locally) readable from this embedding?" without
changing the encoder, which is how I-JEPA, DINO and RadJEPA report representation quality.
All functions take plain arrays ``[N, D]`` features and ``[N, F]`` labels (NaN = unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from radjepa_lab.analysis.metrics import (
    ClassificationMetrics,
    as_numpy,
    classification_metrics,
    macro_auprc,
)
from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "DEFAULT_CS",
    "KNNResult",
    "LinearProbe",
    "ProbeResult",
    "fit_linear_probe",
    "knn_scores",
    "run_knn_probe",
    "run_linear_probe",
]

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
# Newton steps with a Cholesky solve reach the optimum in 3-5 iterations where lbfgs needs
# hundreds (and stopped short at max_iter for weak regularisation): ~20x faster on 768-d
# features, same model (bench/RESULTS.md).
SOLVER = "newton-cholesky"


def _check_xy(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    x = as_numpy(x).astype(np.float64)
    y = as_numpy(y).astype(np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or len(x) != len(y):
        raise RadJEPALabError(
            f"{where}: features must be [N, D] and labels [N, F] with the same N; "
            f"got {x.shape} and {y.shape}"
        )
    if not np.isfinite(x).all():
        raise RadJEPALabError(f"{where}: features contain NaN/Inf; check the encoder output")
    return x, y


@dataclass
class LinearProbe:
    """A fitted one-vs-rest logistic-regression probe with its feature standardiser."""

    scaler: object
    models: list[object | None]  # one LogisticRegression per class, None = not fittable
    constant: list[float]  # fallback score for classes with one label value in training
    C: float
    val_macro_auprc: dict[float, float] = field(default_factory=dict)

    def predict_scores(self, x: np.ndarray) -> np.ndarray:
        """Probability of each finding, ``[N, F]``."""
        z = self.scaler.transform(as_numpy(x).astype(np.float64))
        out = np.empty((len(z), len(self.models)))
        for j, m in enumerate(self.models):
            out[:, j] = m.predict_proba(z)[:, 1] if m is not None else self.constant[j]
        return out

    @property
    def coef(self) -> np.ndarray:
        """``[F, D]`` weights in *standardised* feature space (zeros for unfittable classes)."""
        d = self.scaler.mean_.shape[0]
        return np.stack([m.coef_[0] if m is not None else np.zeros(d) for m in self.models])


def _fit_per_class(z: np.ndarray, y: np.ndarray, c: float, seed: int, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    models: list[object | None] = []
    const: list[float] = []
    for j in range(y.shape[1]):
        known = ~np.isnan(y[:, j])
        yj = y[known, j]
        const.append(float(yj.mean()) if yj.size else 0.0)
        if yj.size == 0 or yj.min() == yj.max():
            models.append(None)
            continue
        m = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, solver=SOLVER)
        m.fit(z[known], yj.astype(int))
        models.append(m)
    return models, const


def _validate_cs(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    Cs: Sequence[float],
    seed: int,
    max_iter: int,
) -> dict[float, float]:
    """Validation macro AUPRC per C. Cs run in increasing order with ``warm_start``, so each
    fit starts from the previous, more regularised solution (several times faster than cold
    starts for the weakly regularised end of the grid)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x_fit)
    zf, zv = sc.transform(x_fit), sc.transform(x_val)
    scores = {c: np.full((len(zv), y_fit.shape[1]), 0.5) for c in Cs}
    for j in range(y_fit.shape[1]):
        known = ~np.isnan(y_fit[:, j])
        yj = y_fit[known, j]
        if yj.size == 0 or yj.min() == yj.max():
            continue
        m = LogisticRegression(C=Cs[0], max_iter=max_iter, random_state=seed, warm_start=True,
                               solver=SOLVER)
        for c in Cs:
            m.set_params(C=c)
            m.fit(zf[known], yj.astype(int))
            scores[c][:, j] = m.predict_proba(zv)[:, 1]
    return {c: macro_auprc(y_val, s) for c, s in scores.items()}


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 500,
) -> LinearProbe:
    """Fit standardised one-vs-rest logistic regression, choosing C on a validation split.

    Multi-label with unknown labels: each finding gets its own binary classifier fitted on the
    rows where that label is known (sklearn's ``OneVsRestClassifier`` cannot skip NaN labels).
    One C is shared by all findings and chosen by validation macro AUPRC; the probe is then
    refitted on train + val with that C. Without ``x_val`` a seeded ``val_fraction`` split of the
    training set is used.
    """
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _check_xy(x_train, y_train, "fit_linear_probe")
    if x_val is None:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x_train))
        n_val = max(1, int(round(val_fraction * len(x_train))))
        vi, ti = perm[:n_val], perm[n_val:]
        x_fit, y_fit, x_val_, y_val_ = x_train[ti], y_train[ti], x_train[vi], y_train[vi]
        x_all, y_all = x_train, y_train
    else:
        x_val_, y_val_ = _check_xy(x_val, y_val, "fit_linear_probe (validation)")
        x_fit, y_fit = x_train, y_train
        x_all, y_all = np.concatenate([x_train, x_val_]), np.concatenate([y_train, y_val_])
    Cs = sorted(Cs)
    val_scores: dict[float, float] = {}
    if len(Cs) > 1:
        val_scores = _validate_cs(x_fit, y_fit, x_val_, y_val_, Cs, seed, max_iter)
        finite = {c: v for c, v in val_scores.items() if np.isfinite(v)}
        best = max(finite, key=finite.get) if finite else Cs[len(Cs) // 2]
    else:
        best = Cs[0]
    sc = StandardScaler().fit(x_all)
    models, const = _fit_per_class(sc.transform(x_all), y_all, best, seed, max_iter)
    return LinearProbe(sc, models, const, best, val_scores)


@dataclass
class ProbeResult:
    """Scores of one probe on a test set plus their metrics (with bootstrap CIs)."""

    name: str
    kind: str  # "linear" or "knn"
    scores: np.ndarray  # [N_test, F]
    y_true: np.ndarray  # [N_test, F]
    metrics: ClassificationMetrics
    info: dict = field(default_factory=dict)


def run_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[str],
    name: str = "encoder",
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    n_resamples: int = 1000,
    indices: np.ndarray | None = None,
) -> ProbeResult:
    """Fit :func:`fit_linear_probe` on train and report AUROC/AUPRC with CIs on test."""
    probe = fit_linear_probe(x_train, y_train, Cs=Cs, seed=seed)
    s = probe.predict_scores(x_test)
    y_test = as_numpy(y_test).astype(np.float64)
    m = classification_metrics(y_test, s, classes, n_resamples, seed, indices)
    return ProbeResult(name, "linear", s, y_test, m, {"C": probe.C, "val": probe.val_macro_auprc})


def knn_scores(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> np.ndarray:
    """Weighted kNN scores with the DINO protocol, one score per label column.

    Features are L2-normalised, the ``k`` most cosine-similar training images vote with weight
    ``exp(sim / T)``, and the score of a finding is the weighted fraction of neighbours that have
    it (neighbours whose label is unknown do not vote). For a multi-label task this replaces
    DINO's per-class vote sum; thresholding at 0.5 gives the kNN prediction.
    """
    x_train, y_train = _check_xy(x_train, y_train, "knn_scores")
    x_test = as_numpy(x_test).astype(np.float64)
    k = min(k, len(x_train))
    tr = x_train / np.maximum(np.linalg.norm(x_train, axis=1, keepdims=True), 1e-12)
    te = x_test / np.maximum(np.linalg.norm(x_test, axis=1, keepdims=True), 1e-12)
    known = ~np.isnan(y_train)
    y0 = np.nan_to_num(y_train)
    out = np.empty((len(te), y_train.shape[1]))
    for a in range(0, len(te), batch_size):
        sim = te[a : a + batch_size] @ tr.T
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, nn, axis=1)
        w = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)  # stable; ratio unchanged
        num = np.einsum("bk,bkf->bf", w, y0[nn] * known[nn])
        den = np.einsum("bk,bkf->bf", w, known[nn].astype(np.float64))
        out[a : a + batch_size] = np.where(den > 0, num / np.maximum(den, 1e-300), 0.5)
    return out


@dataclass
class KNNResult(ProbeResult):
    """kNN probe result; ``accuracy`` is the per-class accuracy at threshold 0.5."""

    accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        """Mean over classes of the per-class accuracy."""
        return float(np.mean(list(self.accuracy.values()))) if self.accuracy else float("nan")


def run_knn_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[str],
    name: str = "encoder",
    k: int = 20,
    temperature: float = 0.07,
    seed: int = 0,
    n_resamples: int = 1000,
    indices: np.ndarray | None = None,
) -> KNNResult:
    """DINO kNN probe: scores, AUROC/AUPRC with CIs and per-class accuracy at 0.5."""
    s = knn_scores(x_train, y_train, x_test, k, temperature)
    y_test = as_numpy(y_test).astype(np.float64)
    m = classification_metrics(y_test, s, classes, n_resamples, seed, indices)
    acc = {}
    for j, c in enumerate(classes):
        kn = ~np.isnan(y_test[:, j])
        acc[c] = float(((s[kn, j] >= 0.5) == (y_test[kn, j] > 0.5)).mean()) if kn.any() else np.nan
    return KNNResult(name, "knn", s, y_test, m, {"k": k, "T": temperature}, accuracy=acc)
