"""DICOM reading: the real RG1 radiograph, DICOMs with known stored values (written by the
kit's own ``write_dicom``), and the display pipeline taken apart for teaching."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from helpers import write_png
from pydicom.data import get_testdata_file

from radjepa_lab.data.dicom import dicom_steps, is_dicom, read_dicom, write_dicom
from radjepa_lab.errors import DataError, DicomReadError


def rg1_path() -> str:
    p = get_testdata_file("RG1_UNCR.dcm")
    if p is None:
        pytest.skip("pydicom-data (RG1_UNCR.dcm) is not installed")
    return p


@pytest.fixture(scope="module")
def rg1():
    return read_dicom(rg1_path())


def region(img: np.ndarray, r0: float, r1: float, c0: float, c1: float) -> float:
    h, w = img.shape
    return float(img[int(r0 * h) : int(r1 * h), int(c0 * w) : int(c1 * w)].mean())


def test_rg1_real_radiograph_has_dark_lungs_and_bright_mediastinum(rg1):
    img, meta = rg1
    assert img.dtype == np.float32 and img.shape == (1955, 1841)
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert meta.photometric_interpretation == "MONOCHROME1" and meta.inverted
    assert meta.bits_stored == 15 and meta.view_position == "PA" and meta.sex == "F"
    assert meta.voi == "window" and meta.pixel_spacing is None  # the file stores 0.0 spacing
    right_lung = region(img, 0.25, 0.45, 0.20, 0.32)  # patient's right = image left
    left_lung = region(img, 0.25, 0.45, 0.66, 0.78)
    mediastinum = region(img, 0.30, 0.50, 0.45, 0.53)
    assert mediastinum > right_lung + 0.2 and mediastinum > left_lung + 0.2
    assert region(img, 0.0, 0.03, 0.0, 0.05) < right_lung  # air outside the body: darkest


def test_rg1_without_voi_keeps_air_dark():
    img, meta = read_dicom(rg1_path(), apply_voi=False)
    assert meta.voi == "none" and meta.inverted
    assert region(img, 0.30, 0.50, 0.45, 0.53) > region(img, 0.25, 0.45, 0.20, 0.32) + 0.2
    assert meta.stored_range == (874.0, 26479.0)


def test_dicom_steps_end_with_air_dark_and_equal_read_dicom(rg1):
    steps = dicom_steps(rg1_path())
    assert [s.title[0] for s in steps] == ["1", "2", "3", "4"]
    out = steps[-1].image
    assert 0 <= out.min() and out.max() <= 1
    assert "inverted" in steps[-1].note
    corner = out[:20, :20].mean()  # air outside the body, top-left
    centre = out[out.shape[0] // 3 : out.shape[0] // 2, out.shape[1] // 2 - 10 : out.shape[1] // 2 + 10]
    assert corner < centre.mean(), "MONOCHROME1 must come back with air dark"
    np.testing.assert_array_equal(out, rg1[0][::4, ::4])  # the kit's own output, subsampled
    assert steps[0].image.shape == out.shape


def test_monochrome2_and_monochrome1_8bit(tmp_path):
    stored = np.array([[0, 64], [128, 255]], np.uint8)
    img2, m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", stored, bits_allocated=8))
    np.testing.assert_allclose(img2, stored / 255.0, atol=1e-6)
    img1, m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", stored, bits_allocated=8,
                                      photometric="MONOCHROME1"))
    np.testing.assert_allclose(img1, 1.0 - stored / 255.0, atol=1e-6)
    assert m1.inverted and not m2.inverted and m1.bits_stored == 8


def test_rescale_then_window(tmp_path):
    stored = np.array([[250, 500, 750, 1000]], np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, bits_stored=12, slope=2.0, intercept=-1000.0,
                       window=(0.0, 1000.0))
    img, meta = read_dicom(path)
    hu = stored * 2.0 - 1000.0  # -500, 0, 500, 1000
    c, w = 0.0, 1000.0  # DICOM linear window (PS3.3 C.11.2.1.2)
    expected = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=2e-3)
    assert meta.voi == "window" and meta.stored_range == (-500.0, 1000.0)
    raw, meta_raw = read_dicom(path, apply_voi=False)
    np.testing.assert_allclose(raw, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)


def test_signed_pixels(tmp_path):
    stored = np.array([[-2048, -1024], [0, 2047]], np.int16)
    img, meta = read_dicom(write_dicom(tmp_path / "s.dcm", stored, bits_stored=12, signed=True))
    np.testing.assert_allclose(img, (stored + 2048) / 4095.0, atol=1e-6)
    assert meta.pixel_representation == 1


def test_bits_stored_masks_unused_high_bits(tmp_path):
    stored = np.array([[0, 100], [4095, 2000]], np.uint16)
    garbage = stored.copy()
    garbage[0, 1] |= 0x2000  # an overlay bit above BitsStored=12
    path = write_dicom(tmp_path / "hb.dcm", stored, bits_stored=12,
                       raw_bytes=garbage.astype("<u2").tobytes())
    img, _ = read_dicom(path)
    np.testing.assert_allclose(img, stored / 4095.0, atol=1e-6)


def test_voi_lut_sequence_is_applied(tmp_path):
    stored = np.array([[0, 1], [2, 3]], np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored, bits_stored=16,
                       voi_lut=([4, 0, 8], [0, 50, 200, 255]), window=(1.0, 2.0))
    img, meta = read_dicom(path)
    assert meta.voi == "voi_lut_sequence"
    np.testing.assert_allclose(img, np.array([[0, 50], [200, 255]]) / 255.0, atol=1e-6)


def test_metadata_fields(tmp_path):
    path = write_dicom(tmp_path / "meta.dcm", np.zeros((4, 4), np.uint16) + 7, bits_stored=12,
                       PixelSpacing=[0.139, 0.14], ViewPosition="AP", PatientSex="M",
                       PatientAge="045Y")
    img, meta = read_dicom(path)
    assert meta.pixel_spacing == (0.139, 0.14) and meta.view_position == "AP"
    assert meta.sex == "M" and meta.age == "045Y" and meta.age_years == 45.0
    assert meta.path == str(path) and (img == 0).all()  # flat image -> zeros, not NaN


def test_multiframe_takes_first_frame_with_warning():
    p = get_testdata_file("emri_small.dcm")
    with pytest.warns(UserWarning, match="multi-frame"):
        img, meta = read_dicom(p)
    assert img.shape == (64, 64) and meta.n_frames == 10 and meta.frame == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img3, meta3 = read_dicom(p, frame=3)
    assert meta3.frame == 3 and not np.array_equal(img, img3)
    with pytest.raises(DicomReadError, match="frame=99"):
        read_dicom(p, frame=99)


def test_rgb_dicom_is_converted_with_warning():
    p = get_testdata_file("SC_rgb.dcm")
    with pytest.warns(UserWarning, match="colour DICOM"):
        img, _ = read_dicom(p)
    assert img.ndim == 2 and 0 <= img.min() and img.max() <= 1


def test_compressed_without_decoder_names_file_and_package():
    p = get_testdata_file("JPEG-LL.dcm")
    try:
        _ = pydicom.dcmread(p).pixel_array
        pytest.skip("a JPEG Lossless decoder is installed here")
    except RuntimeError:
        pass
    with pytest.raises(DicomReadError) as e:
        read_dicom(p)
    assert "JPEG-LL.dcm" in str(e.value) and "pip install" in str(e.value)
    assert "pylibjpeg" in str(e.value)


def test_truncated_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "full.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    data = path.read_bytes()
    cut = tmp_path / "truncated.dcm"
    cut.write_bytes(data[: len(data) - 3000])
    with pytest.raises(DicomReadError, match="truncated.dcm"):
        read_dicom(cut)
    head = tmp_path / "header_only.dcm"
    head.write_bytes(data[:300])
    with pytest.raises(DicomReadError, match="header_only.dcm"):
        read_dicom(head)


def test_no_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "nopix.dcm", np.zeros((2, 2), np.uint16), with_pixels=False)
    with pytest.raises(DicomReadError, match=r"nopix\.dcm.*no PixelData"):
        read_dicom(path)


def test_non_dicom_with_dcm_name_and_missing_path(tmp_path):
    fake = write_png(tmp_path / "really_a_png.dcm", np.zeros((8, 8), np.uint8))
    assert not is_dicom(fake)
    with pytest.raises(DicomReadError, match=r"really_a_png\.dcm.*not a DICOM"):
        read_dicom(fake)
    with pytest.raises(DataError, match="nowhere.dcm"):
        read_dicom(tmp_path / "nowhere.dcm")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(DicomReadError, match="empty.dcm"):
        read_dicom(empty)
