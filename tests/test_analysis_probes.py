"""Linear and kNN probes: separable features give high AUPRC, shuffled labels give chance."""

from __future__ import annotations

import numpy as np

from radjepa_lab.analysis.probes import (
    fit_linear_probe,
    knn_scores,
    run_knn_probe,
    run_linear_probe,
)


def _separable(n: int, seed: int, d: int = 20, f: int = 3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, f)) < 0.3).astype(np.float32)
    x = rng.normal(size=(n, d))
    x[:, :f] += 3.0 * y  # each label shifts its own feature
    return x, y


def test_linear_probe_high_on_separable_and_chance_on_shuffled() -> None:
    xtr, ytr = _separable(400, 0)
    xte, yte = _separable(300, 1)
    r = run_linear_probe(xtr, ytr, xte, yte, ["a", "b", "c"], n_resamples=200)
    assert r.metrics.macro_auprc.estimate > 0.9
    assert r.metrics.macro_auroc.estimate > 0.95
    assert r.info["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    rng = np.random.default_rng(5)
    shuffled = ytr[rng.permutation(len(ytr))]
    s = run_linear_probe(xtr, shuffled, xte, yte, ["a", "b", "c"], n_resamples=200)
    prevalence = float(yte.mean())
    assert abs(s.metrics.macro_auprc.estimate - prevalence) < 0.1
    assert 0.4 < s.metrics.macro_auroc.estimate < 0.6


def test_linear_probe_handles_nan_and_constant_labels() -> None:
    x, y = _separable(200, 2, f=2)
    y[::5, 0] = np.nan
    y[:, 1] = 0.0  # one value only: not fittable, constant score
    probe = fit_linear_probe(x, y, Cs=[1.0])
    s = probe.predict_scores(x)
    assert s.shape == (200, 2)
    assert probe.models[1] is None and np.allclose(s[:, 1], 0.0)
    assert np.isfinite(s).all()


def test_knn_dino_protocol_scores() -> None:
    # two tight clusters: neighbours of a cluster-A point are all A-labelled
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 8)) * 0.05 + np.eye(8)[0]
    b = rng.normal(size=(30, 8)) * 0.05 + np.eye(8)[1]
    x = np.concatenate([a, b])
    y = np.r_[np.ones(30), np.zeros(30)][:, None]
    s = knn_scores(x, y, np.stack([np.eye(8)[0], np.eye(8)[1]]), k=20, temperature=0.07)
    assert s[0, 0] == 1.0 and s[1, 0] == 0.0
    # weighted votes: with k covering both clusters the nearer cluster dominates via exp(s/T)
    s2 = knn_scores(x, y, np.array([[0.6, 0.4, 0, 0, 0, 0, 0, 0]]), k=60, temperature=0.07)
    assert 0.5 < s2[0, 0] < 1.0


def test_knn_probe_accuracy_on_separable() -> None:
    xtr, ytr = _separable(400, 0, d=6)
    xte, yte = _separable(200, 1, d=6)
    r = run_knn_probe(xtr, ytr, xte, yte, ["a", "b", "c"], n_resamples=100)
    assert r.mean_accuracy > 0.8
    assert r.metrics.macro_auprc.estimate > 0.6
