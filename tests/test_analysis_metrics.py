"""Metrics, bootstrap CIs and the paired test, on data with known answers (RankMe: test_monitors)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from radjepa_lab.analysis.metrics import (
    CI,
    PairedResult,
    average_precision,
    bootstrap_ci,
    bootstrap_indices,
    classification_metrics,
    count_significant,
    macro_auprc,
    paired_bootstrap,
    pr_curves,
    roc_auc,
)


def test_fast_ap_and_auc_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 120))
        y = rng.random(n) < 0.3
        if y.all() or not y.any():
            continue
        s = np.round(rng.random(n) * 4)  # many ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_undefined_class_is_nan_and_reported_as_skipped() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], float)
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2], [0.1, 0.4]])
    assert np.isnan(average_precision(y[:, 1], s[:, 1]))
    m = classification_metrics(y, s, ["a", "b"], n_resamples=50)
    assert "b" in m.skipped and "all known test labels are 0" in m.skipped["b"]
    assert m.auprc["a"] == 1.0
    assert m.macro_auprc.estimate == 1.0  # macro over defined classes only


def test_nan_labels_are_ignored_per_class() -> None:
    y = np.array([[1.0], [0.0], [np.nan], [1.0], [0.0]])
    s = np.array([[0.9], [0.1], [0.0], [0.8], [0.2]])
    assert macro_auprc(y, s) == 1.0


def test_bootstrap_ci_covers_true_mean_and_matches_scipy() -> None:
    from scipy.stats import bootstrap

    rng = np.random.default_rng(0)  # a seeded sample; the next test checks coverage rates
    x = rng.normal(loc=2.0, scale=1.0, size=400)
    ci = bootstrap_ci(np.mean, x, n_resamples=2000, seed=1)
    assert ci.covers(2.0)
    assert ci.low < ci.estimate < ci.high
    # half-width ~ 1.96 * sigma / sqrt(n) = 0.098
    assert 0.07 < (ci.high - ci.low) / 2 < 0.13
    ref = bootstrap((x,), np.mean, n_resamples=2000, method="percentile", random_state=1)
    assert ci.low == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert ci.high == pytest.approx(ref.confidence_interval.high, abs=0.02)


def test_bootstrap_ci_coverage_is_near_nominal() -> None:
    # 40 independent seeded experiments on a known distribution: ~95% should cover the truth
    covered = 0
    for k in range(40):
        x = np.random.default_rng(100 + k).exponential(1.0, size=200)
        covered += bootstrap_ci(np.mean, x, n_resamples=400, seed=k).covers(1.0)
    assert covered >= 34


def test_bootstrap_indices_seeded_and_stratified() -> None:
    a = bootstrap_indices(50, 10, seed=3)
    assert np.array_equal(a, bootstrap_indices(50, 10, seed=3))
    strata = np.r_[np.zeros(45), np.ones(5)]
    s = bootstrap_indices(50, 20, seed=0, strata=strata)
    assert (strata[s].sum(axis=1) == 5).all()  # every resample keeps all 5 positives' stratum size


def test_paired_bootstrap_detects_better_encoder_and_not_identical() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    noise = rng.normal(size=y.shape)
    good = y + 0.5 * noise
    bad = y + 2.0 * noise
    r = paired_bootstrap(y, good, bad, n_resamples=500, names=("good", "bad"))
    assert isinstance(r, PairedResult)
    assert r.a_better and r.significant and r.p_value < 0.01
    assert r.delta.estimate == pytest.approx(r.metric_a - r.metric_b)
    same = paired_bootstrap(y, good, good.copy(), n_resamples=200)
    assert same.delta.estimate == 0 and not same.significant and same.p_value == 1.0
    k, n = count_significant([r, same])
    assert (k, n) == (1, 2)


def test_pr_curves_and_ci_str() -> None:
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], float)
    s = np.array([[0.9, 0.1], [0.2, 0.9], [0.7, 0.3], [0.1, 0.6]])
    c = pr_curves(y, s, ["a", "b"])
    assert set(c) == {"a", "b"} and c["a"][2] == 1.0
    assert str(CI(0.5, 0.4, 0.6)) == "0.500 [0.400, 0.600]"


def test_metrics_module_imports_with_numpy_only() -> None:
    # the metrics re-export the monitors' rankme, which the trainer runs on a bare GPU box
    # (torch, timm, numpy only): neither module may pull in the analysis stack
    import subprocess
    import sys

    code = (
        "import sys; import radjepa_lab.analysis.metrics as m; "
        "bad = [k for k in ('sklearn', 'scipy', 'matplotlib', 'umap', 'captum') if k in sys.modules]; "
        "assert not bad, bad; import radjepa_lab.monitors as mon; "
        "assert (m.rankme, m.rankme_split, m.feature_std) == "
        "(mon.rankme, mon.rankme_split, mon.feature_std); "
        "import numpy as np; print(m.rankme(np.eye(4)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(3.0, rel=1e-3)  # centred I_4 has rank 3
