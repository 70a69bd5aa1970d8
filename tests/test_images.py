"""PNG/JPEG/TIFF reading and content-based dispatch (preprocessing: test_transforms)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import write_png
from PIL import Image

from radjepa_lab.data.dicom import write_dicom
from radjepa_lab.data.images import load_image, read_image
from radjepa_lab.errors import DataError, DicomReadError, ImageReadError


def test_png_8bit_known_values(tmp_path):
    arr = np.array([[0, 51], [204, 255]], np.uint8)
    img = read_image(write_png(tmp_path / "a.png", arr))
    assert img.dtype == np.float32
    np.testing.assert_allclose(img, arr / 255.0, atol=1e-7)


def test_png_16bit_uses_container_range_and_warns_for_12bit(tmp_path):
    arr = np.array([[0, 1000], [40000, 65535]], np.uint16)
    img = read_image(write_png(tmp_path / "b.png", arr))
    np.testing.assert_allclose(img, arr / 65535.0, atol=1e-6)
    arr12 = np.array([[0, 1000], [2000, 4095]], np.uint16)
    path = write_png(tmp_path / "c.png", arr12)
    with pytest.warns(UserWarning, match="12-bit"):
        dark = read_image(path)
    assert dark.max() < 0.07
    np.testing.assert_allclose(read_image(path, rescale="minmax"), arr12 / 4095.0, atol=1e-6)


def test_gray_saved_as_rgb_is_silent_and_colour_warns(tmp_path):
    gray = np.array([[10, 200], [30, 40]], np.uint8)
    path = write_png(tmp_path / "g.png", np.repeat(gray[..., None], 3, axis=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(read_image(path), gray / 255.0, atol=1e-7)
    col = np.zeros((2, 2, 3), np.uint8)
    col[..., 0] = 255
    with pytest.warns(UserWarning, match="colour image"):
        img = read_image(write_png(tmp_path / "c.png", col))
    np.testing.assert_allclose(img, np.full((2, 2), round(0.299 * 255) / 255), atol=1e-6)


def test_jpeg_and_tiff(tmp_path):
    arr = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(arr).save(tmp_path / "x.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "x.jpg") - arr / 255.0).max() < 0.05
    f = (arr / 255.0).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), f)
    a16 = (arr.astype(np.uint16) * 257)
    Image.fromarray(a16).save(tmp_path / "s.tiff")
    np.testing.assert_allclose(read_image(tmp_path / "s.tiff"), a16 / 65535.0, atol=1e-6)


def test_nan_tiff_raises_data_error(tmp_path):
    f = np.zeros((4, 4), np.float32)
    f[1, 2] = np.nan
    Image.fromarray(f).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match=r"nan\.tif.*NaN"):
        read_image(tmp_path / "nan.tif")


def test_large_jpeg_is_reduced_while_reading(tmp_path):
    big = (np.random.default_rng(0).random((2000, 1600)) * 255).astype(np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg")
    img = read_image(tmp_path / "big.jpg", max_side=128)
    assert max(img.shape) <= 512 and img.shape[0] / img.shape[1] == pytest.approx(1.25, rel=0.02)
    Image.fromarray(big).save(tmp_path / "big.png")
    assert max(read_image(tmp_path / "big.png", max_side=128).shape) <= 256


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, b"not an image"])
def test_zero_byte_or_corrupt_png_names_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        read_image(path)


def test_truncated_png(tmp_path):
    path = write_png(tmp_path / "t.png", (np.random.default_rng(1).random((64, 64)) * 255).astype(
        np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"t\.png"):
        read_image(path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="ghost.png"):
        read_image(tmp_path / "ghost.png")
    with pytest.raises(DataError, match="ghost.png"):
        load_image(tmp_path / "ghost.png")


def test_load_image_dispatches_on_content(tmp_path):
    stored = np.array([[0, 255]], np.uint8)
    disguised = write_dicom(tmp_path / "looks_like.png", stored, bits_allocated=8)
    np.testing.assert_allclose(load_image(disguised), [[0.0, 1.0]])
    fake = write_png(tmp_path / "fake.dcm", np.zeros((4, 4), np.uint8))
    with pytest.raises(DicomReadError, match=r"fake\.dcm"):
        load_image(fake)
