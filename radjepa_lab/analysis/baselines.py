"""Baselines and the encoder comparison table.

A self-supervised encoder is only interesting if it beats what needs no training: a random
encoder of the same architecture (with *both* the kit's init and PyTorch's default init, since
init alone moves the random baseline by several AUPRC points) and the raw
pixels of a thumbnail. :func:`compare_encoders` probes every feature set the same way, on the
same test images with the same bootstrap resamples, and returns one table with paired deltas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from radjepa_lab.analysis.metrics import (
    CI,
    bootstrap_indices,
    macro_auprc,
    paired_bootstrap,
)
from radjepa_lab.analysis.probes import DEFAULT_CS, ProbeResult, run_knn_probe, run_linear_probe
from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "ComparisonRow",
    "FeatureSet",
    "compare_encoders",
    "pixel_features",
    "random_encoder",
]


def random_encoder(model_cfg: Any, init: str = "kit", seed: int = 0) -> torch.nn.Module:
    """An untrained encoder of the same architecture (``init="kit"`` or ``"torch_default"``)."""
    from radjepa_lab.models import build_encoder

    return build_encoder(model_cfg, init=init, seed=seed).eval()


def pixel_features(images: np.ndarray | torch.Tensor, size: int = 16) -> np.ndarray:
    """Raw-pixel baseline: images ``[N, H, W]`` (or ``[N, 1, H, W]``) average-pooled to size^2.

    For low-level phantom findings a thumbnail is close to ideal, so a learned encoder must beat
    it to claim it learned something beyond intensities.
    """
    x = torch.as_tensor(np.asarray(images, np.float32) if not torch.is_tensor(images) else images)
    x = x.float()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise RadJEPALabError(f"pixel_features: images must be [N, H, W], got {tuple(x.shape)}")
    return F.adaptive_avg_pool2d(x, size).reshape(len(x), -1).numpy()


@dataclass
class FeatureSet:
    """Train and test features of one encoder under one pooling."""

    name: str
    train: np.ndarray
    test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ComparisonRow:
    """One line of the comparison table: a feature set under one probe."""

    name: str
    probe: str  # "linear" or "knn"
    macro_auprc: CI
    macro_auroc: CI
    auprc: dict[str, float]
    delta_vs_baseline: CI | None  # paired bootstrap, this - baseline
    p_value: float | None
    baseline: str
    knn_accuracy: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        """The paired CI against the baseline excludes 0."""
        d = self.delta_vs_baseline
        return d is not None and (d.low > 0 or d.high < 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (CIs become {estimate, low, high})."""
        d = asdict(self)
        d["significant"] = self.significant
        return d


def compare_encoders(
    feature_sets: Sequence[FeatureSet] | Mapping[str, tuple[np.ndarray, np.ndarray]],
    y_train: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[str],
    baseline: str | Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    probes: Sequence[str] = ("linear", "knn"),
    n_resamples: int = 1000,
    seed: int = 0,
    Cs: Sequence[float] = DEFAULT_CS,
    progress: bool = False,
) -> tuple[list[ComparisonRow], dict[tuple[str, str], ProbeResult]]:
    """Probe every feature set identically and return one table with paired deltas.

    ``baseline``: the name to compare against, or a list of names of which the one with the
    highest macro AUPRC (per probe) is chosen, i.e. "compare against the stronger random init";
    or a mapping from feature-set name to such a list, when encoders of different
    architectures each have their own random inits.
    All rows share one set of bootstrap indices, so every delta is a paired comparison on the
    same resampled test images. Returns ``(rows, results)`` where ``results[(name, probe)]``
    holds the scores for PR curves and further tests.
    """
    if isinstance(feature_sets, Mapping):
        feature_sets = [FeatureSet(k, v[0], v[1]) for k, v in feature_sets.items()]
    names = [f.name for f in feature_sets]
    if len(set(names)) != len(names):
        raise RadJEPALabError(f"compare_encoders: feature-set names must be unique, got {names}")
    y_test = np.asarray(y_test, dtype=np.float64)
    idx = bootstrap_indices(len(y_test), n_resamples, seed)
    results: dict[tuple[str, str], ProbeResult] = {}
    from tqdm.auto import tqdm

    jobs = [(fs, p) for fs in feature_sets for p in probes]
    for fs, p in tqdm(jobs, desc="probes", disable=not progress, leave=False):
        if p == "linear":
            r = run_linear_probe(
                fs.train, y_train, fs.test, y_test, classes, fs.name, Cs, seed, indices=idx
            )
        elif p == "knn":
            r = run_knn_probe(fs.train, y_train, fs.test, y_test, classes, fs.name, seed=seed,
                              indices=idx)
        else:
            raise RadJEPALabError(f"compare_encoders: unknown probe {p!r}; use 'linear' or 'knn'")
        results[(fs.name, p)] = r

    def chosen(name: str, p: str) -> str | None:
        """The baseline of feature set ``name`` under probe ``p`` (the strongest candidate)."""
        cands = baseline.get(name) if isinstance(baseline, Mapping) else baseline
        if cands is None:
            return None
        if isinstance(cands, str):
            cands = [cands]
        missing = [b for b in cands if (b, p) not in results]
        if missing:
            raise RadJEPALabError(f"compare_encoders: baseline {missing[0]!r} is not among {names}")
        return max(cands, key=lambda b: results[(b, p)].metrics.macro_auprc.estimate)

    rows: list[ComparisonRow] = []
    for p in probes:
        for fs in feature_sets:
            r = results[(fs.name, p)]
            base = chosen(fs.name, p)
            delta = pv = None
            if base is not None and fs.name != base:
                keep = [c for c in r.metrics.classes if c not in r.metrics.skipped]
                cols = [r.metrics.classes.index(c) for c in keep]
                pr = paired_bootstrap(
                    y_test[:, cols],
                    r.scores[:, cols],
                    results[(base, p)].scores[:, cols],
                    macro_auprc,
                    indices=idx,
                    names=(fs.name, base),
                )
                delta, pv = pr.delta, pr.p_value
            rows.append(
                ComparisonRow(
                    name=fs.name,
                    probe=p,
                    macro_auprc=r.metrics.macro_auprc,
                    macro_auroc=r.metrics.macro_auroc,
                    auprc=dict(r.metrics.auprc),
                    delta_vs_baseline=delta,
                    p_value=pv,
                    baseline=base or "",
                    knn_accuracy=getattr(r, "mean_accuracy", None),
                    info={**fs.info, **r.info, "skipped": r.metrics.skipped},
                )
            )
    return rows, results
