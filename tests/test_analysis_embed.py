"""Embedding extraction: pooling shapes, layers, and a disk cache keyed by weights+data+args."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_model

from radjepa_lab.analysis.embed import (
    dataset_fingerprint,
    extract_features,
    pool_tokens,
    project_2d,
    state_dict_hash,
)
from radjepa_lab.data.datasets import ArrayDataset
from radjepa_lab.models import build_encoder

CFG = tiny_model()


@pytest.fixture(scope="module")
def data() -> ArrayDataset:
    rng = np.random.default_rng(0)
    imgs = rng.random((10, 32, 32)).astype(np.float32)
    labels = (rng.random((10, 2)) < 0.5).astype(np.float32)
    return ArrayDataset(imgs, labels, ["a", "b"])


def test_pool_tokens_2x2_keeps_quadrants() -> None:
    t = torch.zeros(1, 16, 3)
    t[0, 0, 0] = 4.0  # top-left patch of a 4x4 grid, channel 0
    p = pool_tokens(t, (4, 4), "2x2")
    assert p.shape == (1, 12)
    assert p[0, 0] == 1.0 and p[0, 1:4].abs().sum() == 0  # channel 0: TL, TR, BL, BR
    assert pool_tokens(t, (4, 4), "mean")[0, 0] == pytest.approx(0.25)


def test_extract_shapes_layers_and_progressless(data) -> None:
    enc = build_encoder(CFG, seed=0)
    f = extract_features(enc, data, pool="2x2", mid_layer=0, tokens=True, batch_size=4,
                         progress=False)
    assert f.pooled.shape == (10, 32 * 4 * 2)  # final 2x2 + mid-layer 2x2
    assert f.tokens.shape == (10, 4, 4, 32)
    assert f.grid == (4, 4) and f.classes == ["a", "b"]
    np.testing.assert_array_equal(f.idx, np.arange(10))
    np.testing.assert_array_equal(f.labels, data.labels)
    with torch.no_grad():
        direct = enc(torch.from_numpy(data.images[:2, None])).mean(1).numpy()
    g = extract_features(enc, data, pool="mean", progress=False)
    np.testing.assert_allclose(g.pooled[:2], direct, atol=1e-5)
    last = extract_features(enc, data, pool="mean", layer=-1, progress=False)
    np.testing.assert_allclose(last.pooled, g.pooled, atol=1e-5)  # last block + norm == output


def test_cache_hits_return_identical_arrays_and_keys_change(tmp_path, data) -> None:
    enc = build_encoder(CFG, seed=0)
    a = extract_features(enc, data, pool="2x2", tokens=True, cache_dir=tmp_path, progress=False)
    assert a.info["cache_hit"] is False
    b = extract_features(enc, data, pool="2x2", tokens=True, cache_dir=tmp_path, progress=False)
    assert b.info["cache_hit"] is True
    np.testing.assert_array_equal(a.pooled, b.pooled)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert b.grid == a.grid and b.classes == a.classes
    # other pooling, other weights, other data -> new entries
    extract_features(enc, data, pool="mean", cache_dir=tmp_path, progress=False)
    other = build_encoder(CFG, seed=1)
    assert state_dict_hash(other) != state_dict_hash(enc)
    c = extract_features(other, data, pool="2x2", tokens=True, cache_dir=tmp_path, progress=False)
    assert c.info["cache_hit"] is False
    d2 = ArrayDataset(data.images[::-1].copy(), data.labels, ["a", "b"])
    assert dataset_fingerprint(d2) != dataset_fingerprint(data)
    assert len(list(tmp_path.glob("features_*.npz"))) == 3


def test_fingerprint_of_generic_dataset_changes_with_content() -> None:
    class Tiny(torch.utils.data.Dataset):
        def __init__(self, seed: int) -> None:
            self.seed = seed

        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int):
            g = torch.Generator().manual_seed(self.seed + i)
            return {"img": torch.rand(1, 8, 8, generator=g), "lab": torch.zeros(1), "idx": i}

    assert dataset_fingerprint(Tiny(0)) == dataset_fingerprint(Tiny(0))
    assert dataset_fingerprint(Tiny(0)) != dataset_fingerprint(Tiny(1))


def test_project_2d_pca_deterministic_and_separates() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(20, 5)), rng.normal(size=(20, 5)) + 5])
    p = project_2d(x, method="pca")
    assert p.method == "pca" and p.coords.shape == (40, 2)
    np.testing.assert_array_equal(p.coords, project_2d(x, method="pca").coords)
    assert abs(p.coords[:20, 0].mean() - p.coords[20:, 0].mean()) > 2


@pytest.mark.slow  # numba compiles UMAP on first call (~30 s)
def test_project_2d_umap_small() -> None:
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 6])
    p = project_2d(x, method="umap", seed=0, n_neighbors=10)
    assert p.method == "umap" and p.coords.shape == (60, 2)
    # the two clusters stay apart
    ca, cb = p.coords[:30].mean(0), p.coords[30:].mean(0)
    spread = p.coords[:30].std(0).max()
    assert np.linalg.norm(ca - cb) > 2 * spread


def test_neighbour_agreement_against_chance() -> None:
    from radjepa_lab.analysis.embed import neighbour_agreement

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    grouped = np.concatenate([rng.normal(0, 0.1, (50, 4)) + [5, 0, 0, 0],
                              rng.normal(0, 0.1, (50, 4)) + [0, 5, 0, 0]])
    agree, chance = neighbour_agreement(grouped, labels, k=5)
    assert agree == 1.0 and chance == pytest.approx(0.5)
    noise_agree, _ = neighbour_agreement(rng.normal(size=(100, 4)), labels, k=5)
    assert 0.3 < noise_agree < 0.7  # no structure: about chance
    with pytest.raises(Exception, match="need"):
        neighbour_agreement(grouped[:5], labels[:5], k=5)
