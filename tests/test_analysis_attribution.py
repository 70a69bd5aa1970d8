"""Attributions: the folded probe module matches sklearn; IG satisfies completeness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_model

from radjepa_lab.analysis.embed import extract_features
from radjepa_lab.analysis.probes import fit_linear_probe
from radjepa_lab.data.datasets import ArrayDataset
from radjepa_lab.models import build_encoder

pytest.importorskip("captum")

from radjepa_lab.analysis.attribution import (  # noqa: E402
    integrated_gradients,
    occlusion,
    probe_module,
    token_gradcam,
)

CFG = tiny_model()


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    imgs = rng.random((40, 32, 32)).astype(np.float32) * 0.5
    y = (rng.random(40) < 0.5).astype(np.float32)
    imgs[y == 1, :16, :16] += 0.5  # finding = bright top-left quadrant
    enc = build_encoder(CFG, init="torch_default", seed=0).eval()
    ds = ArrayDataset(imgs, y[:, None], ["bright_tl"])
    f = extract_features(enc, ds, pool="2x2", progress=False)
    probe = fit_linear_probe(f.pooled, f.labels, Cs=[1.0])
    return enc, probe, imgs, f


@pytest.mark.parametrize("pool", ["2x2"])
def test_probe_module_equals_sklearn_probe(setup, pool) -> None:
    enc, probe, imgs, f = setup
    m = probe_module(enc, probe, pool)
    with torch.no_grad():
        p = torch.sigmoid(m(torch.from_numpy(imgs[:6, None]))).numpy()[:, 0]
    np.testing.assert_allclose(p, probe.predict_scores(f.pooled[:6])[:, 0], atol=1e-4)


def test_integrated_gradients_completeness_and_maps(setup) -> None:
    enc, probe, imgs, _ = setup
    m = probe_module(enc, probe, "2x2")
    ig = integrated_gradients(m, imgs[0], target=0, n_steps=64)
    assert ig.shape == (32, 32)
    with torch.no_grad():
        diff = (m(torch.from_numpy(imgs[0])[None, None]) - m(torch.zeros(1, 1, 32, 32)))[0, 0]
    assert ig.sum() == pytest.approx(float(diff), rel=0.05, abs=0.05)
    occ = occlusion(m, imgs[0], target=0, window=8, stride=8)
    assert occ.shape == (32, 32) and np.isfinite(occ).all()
    gc = token_gradcam(m, imgs[0], target=0)
    assert gc.shape == (4, 4) and (gc >= 0).all()
