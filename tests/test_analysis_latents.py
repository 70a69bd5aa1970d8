"""Predicted-vs-target latents: shapes, cosine maps, shared PCA basis and NN crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_model

from radjepa_lab.analysis.latents import (
    block_masks,
    build_patch_bank,
    nearest_patch_crops,
    pca_rgb,
    predict_latents,
)
from radjepa_lab.models import build_encoder, build_predictor

CFG = tiny_model()


@pytest.fixture(scope="module")
def nets():
    return build_encoder(CFG, seed=0), build_predictor(CFG), build_encoder(CFG, seed=0)


def test_predict_latents_with_given_masks(nets) -> None:
    enc, pred, tgt = nets
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    ctx, t = block_masks((4, 4), 1, 1, (2, 2))
    assert t.tolist() == [[5, 6, 9, 10]] and 5 not in ctx and len(ctx) == 12
    r = predict_latents(enc, pred, tgt, img, ctx, t)
    assert r.predicted.shape == (1, 4, 32) and r.target.shape == (1, 4, 32)
    # cosine map holds exactly the target patches
    assert np.isfinite(r.cosine_map).sum() == 4
    assert np.isfinite(r.cosine_map[1:3, 1:3]).all()
    with torch.no_grad():
        h = tgt(torch.from_numpy(img)[None, None])[0]
        h = torch.nn.functional.layer_norm(h, (32,))
    np.testing.assert_allclose(r.target[0], h[[5, 6, 9, 10]].numpy(), atol=1e-5)
    expected_cos = torch.nn.functional.cosine_similarity(
        torch.from_numpy(r.predicted[0]), torch.from_numpy(r.target[0]), dim=-1)
    np.testing.assert_allclose(r.cosine[0], expected_cos.numpy(), atol=1e-6)
    assert r.rgb_target.shape == (4, 4, 3) and np.isnan(r.rgb_predicted[0, 0]).all()
    assert 0 <= np.nanmin(r.rgb_predicted) and np.nanmax(r.rgb_predicted) <= 1


def test_pca_rgb_shared_basis() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    ra, rb = pca_rgb(a, a, a.copy())
    np.testing.assert_array_equal(ra, rb)  # same features -> same colours in both panels
    assert ra.shape == (50, 3) and ra.min() >= 0 and ra.max() <= 1


def test_patch_bank_nn_retrieves_the_exact_patch(nets) -> None:
    enc, pred, tgt = nets
    imgs = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    bank = build_patch_bank(tgt, imgs)
    assert bank.tokens.shape == (48, 32)
    assert bank.locate(17) == (1, 0, 1)
    np.testing.assert_array_equal(bank.crop(17), imgs[1, 0:8, 8:16])
    assert bank.crop(0, margin=1).shape == (24, 24)
    r = predict_latents(enc, pred, tgt, imgs[1], *block_masks((4, 4), 0, 0, (1, 2)))
    r.predicted = r.target.copy()  # a perfect predictor must retrieve the true patches
    nn = nearest_patch_crops(r, bank, k=2)
    assert nn.index[:, 0].tolist() == [16, 17]
    np.testing.assert_allclose(nn.similarity[:, 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(nn.crops[:, 0], nn.true_crops)


def test_predict_latents_samples_masks_when_none_given(nets) -> None:
    enc, pred, tgt = nets
    img = np.random.default_rng(2).random((32, 32)).astype(np.float32)
    a = predict_latents(enc, pred, tgt, img, seed=3)
    b = predict_latents(enc, pred, tgt, img, seed=3)
    np.testing.assert_array_equal(a.target_idx, b.target_idx)
    assert not set(a.context_idx.tolist()) & set(a.target_idx.ravel().tolist())


def test_position_mean_centres_the_latents(nets) -> None:
    from radjepa_lab.analysis.latents import position_mean

    enc, pred, tgt = nets
    imgs = np.random.default_rng(1).random((6, 32, 32)).astype(np.float32)
    pm = position_mean(tgt, imgs)
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(tgt(torch.from_numpy(imgs)[:, None]), (32,))
    np.testing.assert_allclose(pm, h.mean(0).numpy(), atol=1e-5)  # the mean token per position
    ctx, t = block_masks((4, 4), 1, 1, (2, 2))
    r = predict_latents(enc, pred, tgt, imgs[0], ctx, t, position_mean=pm)
    want = torch.nn.functional.cosine_similarity(
        torch.from_numpy(r.predicted[0] - pm[[5, 6, 9, 10]]),
        torch.from_numpy(r.target[0] - pm[[5, 6, 9, 10]]), dim=-1)
    np.testing.assert_allclose(r.centered_cosine[0], want.numpy(), atol=1e-5)
    assert r.centered and np.isfinite(r.mean_centered_cosine)
    plain = predict_latents(enc, pred, tgt, imgs[0], ctx, t)
    assert plain.centered_cosine is None and np.isnan(plain.mean_centered_cosine)
    with pytest.raises(Exception, match="position_mean must be"):
        predict_latents(enc, pred, tgt, imgs[0], ctx, t, position_mean=pm[:3])
