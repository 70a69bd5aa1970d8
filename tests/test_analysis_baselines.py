"""Baselines and the comparison table with paired deltas against the stronger baseline."""

from __future__ import annotations

import numpy as np
import pytest

from radjepa_lab.analysis.baselines import (
    FeatureSet,
    compare_encoders,
    pixel_features,
    random_encoder,
)


def test_pixel_features_average_pool() -> None:
    imgs = np.zeros((2, 32, 32), np.float32)
    imgs[0, :2, :2] = 1.0
    f = pixel_features(imgs, size=16)
    assert f.shape == (2, 256)
    assert f[0, 0] == 1.0 and f[0, 1:].sum() == 0 and f[1].sum() == 0


def test_random_encoder_inits_differ(tiny_model) -> None:
    a = random_encoder(tiny_model, "kit", seed=0)
    b = random_encoder(tiny_model, "torch_default", seed=0)
    wa, wb = a.blocks[0].mlp.fc1.weight, b.blocks[0].mlp.fc1.weight
    assert float(wa.detach().std()) < 0.03 < float(wb.detach().std())  # trunc-normal(0.02) vs kaiming-uniform
    assert not a.training


def test_compare_encoders_table() -> None:
    rng = np.random.default_rng(0)
    ytr = (rng.random((300, 2)) < 0.3).astype(np.float32)
    yte = (rng.random((200, 2)) < 0.3).astype(np.float32)

    def feats(y, strength, seed):
        r = np.random.default_rng(seed)
        x = r.normal(size=(len(y), 10))
        x[:, :2] += strength * y
        return x

    sets = [
        FeatureSet("good", feats(ytr, 3.0, 1), feats(yte, 3.0, 2)),
        FeatureSet("weak", feats(ytr, 0.7, 3), feats(yte, 0.7, 4)),
        FeatureSet("noise", feats(ytr, 0.0, 5), feats(yte, 0.0, 6)),
    ]
    rows, results = compare_encoders(sets, ytr, yte, ["a", "b"], baseline=["weak", "noise"],
                                     n_resamples=200)
    lin = {r.name: r for r in rows if r.probe == "linear"}
    knn = {r.name: r for r in rows if r.probe == "knn"}
    assert set(lin) == set(knn) == {"good", "weak", "noise"}
    assert lin["good"].baseline == "weak"  # the stronger of the two baselines
    assert lin["weak"].delta_vs_baseline is None
    assert lin["good"].delta_vs_baseline.low > 0 and lin["good"].significant
    assert lin["good"].p_value < 0.05
    assert lin["noise"].delta_vs_baseline.estimate < 0
    assert knn["good"].knn_accuracy is not None and 0 <= knn["good"].knn_accuracy <= 1
    assert results[("good", "linear")].scores.shape == (200, 2)
    d = lin["good"].to_dict()
    assert d["significant"] is True and set(d["macro_auprc"]) >= {"estimate", "low", "high"}
    with pytest.raises(Exception, match="baseline"):
        compare_encoders(sets, ytr, yte, ["a", "b"], baseline="missing", probes=("linear",),
                         n_resamples=10)


def test_each_feature_set_gets_its_own_baselines() -> None:
    """Encoders of two architectures: each is compared with the stronger of ITS random inits."""
    rng = np.random.default_rng(3)
    ytr, yte = (rng.random((300, 1)) > 0.5).astype(float), (rng.random((200, 1)) > 0.5).astype(float)

    def feats(y, strength, seed):
        r = np.random.default_rng(seed)
        x = r.normal(size=(len(y), 6))
        x[:, :1] += strength * y
        return x

    sets = [FeatureSet(n, feats(ytr, s, i), feats(yte, s, i + 10))
            for i, (n, s) in enumerate([("a", 2.0), ("a-rand1", 0.0), ("a-rand2", 1.0),
                                        ("b", 2.0), ("b-rand1", 0.0), ("b-rand2", 0.2)])]
    rows, _ = compare_encoders(sets, ytr, yte, ["f"], probes=("linear",), n_resamples=50,
                               baseline={"a": ["a-rand1", "a-rand2"],
                                         "b": ["b-rand1", "b-rand2"]})
    by = {r.name: r for r in rows}
    assert by["a"].baseline == "a-rand2" and by["b"].baseline == "b-rand2"
    assert by["a-rand1"].delta_vs_baseline is None  # not in the mapping: no baseline
    with pytest.raises(Exception, match="baseline 'nope'"):
        compare_encoders(sets, ytr, yte, ["f"], probes=("linear",), n_resamples=10,
                         baseline={"a": ["nope"]})
