"""Fuzz the DICOM reader: mutated bytes and mutated header values of valid files must give
either a valid [0, 1] image or a DicomReadError naming the file, within a time limit."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from corpus import dicom_dataset, ramp, save_dicom
from guards import time_limit
from hypothesis import given
from hypothesis import strategies as st

from radjepa_lab.data.dicom import read_dicom
from radjepa_lab.errors import DicomReadError

CASE_LIMIT_S = 10.0


def _seeds(root: Path) -> list[bytes]:
    """Small valid files covering the reader's branches (LUT path, float path, colour...)."""
    out = []
    ds = dicom_dataset(16, 16)
    ds.PixelData = ramp().astype("<u2").tobytes()
    out.append(save_dicom(ds, root / "ramp.dcm"))
    ds = dicom_dataset(8, 8, signed=True)
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, -1024.0
    ds.WindowCenter, ds.WindowWidth = 0.0, 800.0
    ds.PixelData = np.linspace(-500, 500, 64).astype("<i2").tobytes()
    out.append(save_dicom(ds, root / "signed_window.dcm"))
    ds = dicom_dataset(8, 8, bits=8, photometric="MONOCHROME1")
    ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    out.append(save_dicom(ds, root / "mono1.dcm"))
    ds = dicom_dataset(4, 4)
    ds.NumberOfFrames = 2
    ds.PixelData = np.arange(32, dtype="<u2").tobytes()
    out.append(save_dicom(ds, root / "frames.dcm"))
    ds = dicom_dataset(4, 4, bits=8, spp=3, photometric="RGB")
    ds.PixelData = np.arange(48, dtype=np.uint8).tobytes()
    out.append(save_dicom(ds, root / "rgb.dcm"))
    ds = dicom_dataset(4, 4, bits=32)
    for k in ("BitsStored", "HighBit", "PixelRepresentation"):
        del ds[k]
    ds.FloatPixelData = np.linspace(0, 1, 16, dtype=np.float32).tobytes()
    out.append(save_dicom(ds, root / "float.dcm"))
    return [p.read_bytes() for p in out]


class Seeds(tuple):
    """(seed files' bytes, scratch path); a short repr keeps hypothesis reports readable."""

    def __repr__(self) -> str:
        return f"Seeds({len(self[0])} files, {self[1]})"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    root = tmp_path_factory.mktemp("dicom_seeds")
    return Seeds((_seeds(root), root / "case.dcm"))


def check_read(path: Path) -> str:
    """read_dicom must decode or raise DicomReadError naming ``path``; returns the outcome."""
    with time_limit(CASE_LIMIT_S, f"read_dicom({path.name})"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img, meta = read_dicom(path)
        except DicomReadError as e:
            assert str(path) in str(e), str(e)
            return "error"
    assert img.dtype == np.float32 and img.ndim == 2 and img.size > 0
    assert np.isfinite(img).all() and 0.0 <= img.min() and img.max() <= 1.0
    assert meta.path == str(path)
    return "decoded"


MUTATION = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 64)),
    st.tuples(st.just("u32"), st.integers(0, 2**20),
              st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF])),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    b = bytearray(data)
    for op in ops:
        pos = op[1] % (len(b) + 1)
        if op[0] == "set" and b:
            b[pos % len(b)] = op[2]
        elif op[0] == "truncate":
            del b[pos:]
        elif op[0] == "insert":
            b[pos:pos] = op[2]
        elif op[0] == "delete":
            del b[pos : pos + op[2]]
        elif op[0] == "u32":
            b[pos : pos + 4] = int(op[2]).to_bytes(4, "little")
    return bytes(b)


@given(seed=st.integers(0, 5), ops=st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_bytes_give_an_image_or_a_kit_error(seeds: Seeds, seed: int,
                                                    ops: list[tuple]) -> None:
    files, path = seeds
    path.write_bytes(mutate(files[seed], ops))
    check_read(path)


HEADER_FIELDS = {
    "Rows": st.integers(0, 70000), "Columns": st.integers(0, 70000),
    "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 40), "HighBit": st.integers(0, 40),
    "PixelRepresentation": st.integers(0, 3), "SamplesPerPixel": st.integers(0, 4),
    "NumberOfFrames": st.integers(-1, 10**6),
    "PhotometricInterpretation": st.sampled_from(
        ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR", "", "BOGUS"]),
    "RescaleSlope": st.floats(allow_nan=True, allow_infinity=True, width=32),
    "RescaleIntercept": st.floats(-1e6, 1e6, width=32),
    "WindowCenter": st.floats(allow_nan=True, allow_infinity=True, width=32),
    "WindowWidth": st.floats(-10.0, 1e5, width=32),
}


@given(seed=st.integers(0, 5), data=st.data())
def test_mutated_header_values_give_an_image_or_a_kit_error(
        seeds: Seeds, seed: int, data: st.DataObject) -> None:
    import pydicom

    files, path = seeds
    path.write_bytes(files[seed])
    ds = pydicom.dcmread(path)
    names = data.draw(st.lists(st.sampled_from(sorted(HEADER_FIELDS)), min_size=1, max_size=3,
                               unique=True))
    for name in names:
        value = data.draw(HEADER_FIELDS[name], label=name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's own "invalid value" notice
            setattr(ds, name, value if not isinstance(value, float) else f"{value:.6g}"[:16])
    try:
        ds.save_as(path, enforce_file_format=False)
    except Exception:  # pydicom refuses to write this value: nothing to read
        return
    check_read(path)
