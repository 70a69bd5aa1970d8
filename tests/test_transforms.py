"""Preprocessing to the model's square input, histogram equalisation and batch resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radjepa_lab.data.transforms import (
    as_image_batch,
    equalize_histogram,
    preprocess,
    resize_batch,
)
from radjepa_lab.errors import DataError


def test_preprocess_pad_keeps_aspect_and_pads_with_air():
    img = np.ones((100, 50), np.float32)
    out = preprocess(img, 64, mode="pad")
    assert out.shape == (64, 64) and out.dtype == np.float32
    cols = np.flatnonzero(out.mean(0) > 0.5)
    assert len(cols) == 32 and cols[0] == 16  # centred, aspect 2:1 kept
    assert out[:, :15].max() == 0.0 and out[:, 49:].max() == 0.0


def test_preprocess_crop_fills_square_from_centre():
    img = np.zeros((100, 50), np.float32)
    img[45:55] = 1.0  # a band in the middle rows survives the centre crop
    out = preprocess(img, 50, mode="crop")
    assert out.shape == (50, 50)
    rows = np.flatnonzero(out.mean(1) > 0.5)
    assert 20 <= rows.min() and rows.max() <= 29


def test_preprocess_checks_range_and_finiteness():
    with pytest.raises(DataError, match="NaN"):
        preprocess(np.array([[0.0, np.nan]], np.float32), 8)
    with pytest.raises(DataError, match=r"\[0, 255\]"):
        preprocess(np.array([[0.0, 255.0]], np.float32), 8)
    with pytest.raises(DataError):
        preprocess(np.zeros((4, 4)), 8, mode="stretch")


def test_preprocess_downsizes_large_images_and_stays_in_range():
    rng = np.random.default_rng(0)
    img = rng.random((1200, 1000)).astype(np.float32)
    out = preprocess(img, 128)
    assert out.shape == (128, 128) and 0.0 <= out.min() and out.max() <= 1.0
    content = out[:, 11:117]
    assert abs(content.mean() - 0.5) < 0.02  # averaging, not aliasing/point sampling
    assert content.std() < 0.1


def test_equalize_flattens_histogram():
    img = (np.random.default_rng(0).random((64, 64)) ** 4).astype(np.float32)
    eq = equalize_histogram(img)
    hist, _ = np.histogram(eq, bins=4, range=(0, 1))
    assert hist.min() > 0.2 * eq.size and eq.min() >= 0 and eq.max() <= 1
    out = preprocess(img, 32, equalize=True)
    assert out.shape == (32, 32) and abs(out.mean() - 0.5) < 0.1


def test_resize_batch_keeps_the_container_and_averages_when_shrinking():
    x = np.zeros((2, 3, 8, 8), np.float32)
    x[..., :4, :] = 1.0  # top half bright
    out = resize_batch(x, 4)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(out[0, 0, :, 0], [1, 1, 0, 0])
    checker = (np.indices((8, 8)).sum(0) % 2).astype(np.float32)
    np.testing.assert_allclose(resize_batch(checker, 4), 0.5)  # area average, no aliasing
    t = torch.from_numpy(x)
    assert torch.is_tensor(resize_batch(t, 16)) and resize_batch(t, 16).shape == (2, 3, 16, 16)
    assert resize_batch(t, 8) is t  # already at size
    masks = resize_batch(np.eye(4, dtype=bool), 8, nearest=True)
    assert masks.dtype == bool and masks.sum() == 16


def test_as_image_batch_shapes_and_single_image_check():
    assert as_image_batch(np.zeros((8, 8))).shape == (1, 1, 8, 8)
    assert as_image_batch(torch.zeros(1, 8, 8)).dtype == torch.float32
    assert as_image_batch(np.zeros((3, 1, 8, 8)), single=False).shape == (3, 1, 8, 8)
    with pytest.raises(DataError, match="ONE image"):
        as_image_batch(np.zeros((3, 1, 8, 8)), where="attention_maps")


def test_random_resized_crop_is_seeded_per_image_and_identity_at_full_scale() -> None:
    import torch

    from radjepa_lab.data.transforms import random_resized_crop

    x = torch.rand(4, 1, 16, 16)
    full = random_resized_crop(x, (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    assert torch.allclose(full, x, atol=1e-5)  # the whole image is the identity
    a = random_resized_crop(x, (0.3, 1.0), torch.Generator().manual_seed(1))
    b = random_resized_crop(x, (0.3, 1.0), torch.Generator().manual_seed(1))
    c = random_resized_crop(x, (0.3, 1.0), torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    same = torch.stack([x[0]] * 4)  # one image, four crops: each image draws its own box
    crops = random_resized_crop(same, (0.3, 0.5), torch.Generator().manual_seed(3))
    assert len({tuple(cr.flatten()[:8].tolist()) for cr in crops}) == 4


def test_crops_to_another_size_and_intensity_jitter() -> None:
    from radjepa_lab.data.transforms import random_intensity_jitter, random_resized_crop

    imgs = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    small = random_resized_crop(imgs, (0.1, 0.3), torch.Generator().manual_seed(1), size=12)
    assert small.shape == (3, 1, 12, 12)
    j = random_intensity_jitter(imgs, 0.4, torch.Generator().manual_seed(2), p=1.0)
    assert j.shape == imgs.shape and float(j.min()) >= 0 and float(j.max()) <= 1
    assert not torch.equal(j, imgs)
    torch.testing.assert_close(random_intensity_jitter(imgs, 0.4, torch.Generator(), p=0.0), imgs)
    torch.testing.assert_close(random_intensity_jitter(imgs, 0.0, torch.Generator(), p=1.0), imgs)
