"""Fuzz preprocessing on random shapes, dtypes and value ranges: a valid [0, 1] image always
comes out as float32 [size, size] in [0, 1]; anything else is a DataError, never garbage."""

from __future__ import annotations

import numpy as np
import pytest
from guards import time_limit
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from radjepa_lab.data.transforms import check_unit_range, preprocess, to_tensor
from radjepa_lab.errors import DataError

DTYPES = [np.float16, np.float32, np.float64, np.uint8, np.int32, np.bool_]


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    """Shapes from 1x1 to long strips; values in range, slightly out, wildly out, or NaN/Inf."""
    dtype = draw(st.sampled_from(DTYPES))
    h, w = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    lead = draw(st.sampled_from([(), (1,)]))
    kind = draw(st.sampled_from(["unit", "unit", "unit", "constant", "out", "nonfinite"]))
    shape = (*lead, h, w)
    if dtype == np.bool_:
        return draw(hnp.arrays(np.bool_, shape))
    if kind == "constant":
        return np.full(shape, draw(st.floats(0, 1)), dtype=np.float32).astype(dtype)
    if kind == "unit" or np.dtype(dtype).kind in "iu":
        hi = 1 if np.dtype(dtype).kind in "iu" and kind != "out" else 1.0
        if np.dtype(dtype).kind in "iu":
            return draw(hnp.arrays(dtype, shape, elements=st.integers(0, 255 if kind == "out"
                                                                      else hi)))
        return draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=16)))
    if kind == "out":
        return draw(hnp.arrays(dtype, shape, elements=st.floats(-4, 4, width=16)))
    arr = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=16)))
    arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf,
                                                                         -np.inf]))
    return arr


@given(img=images(), size=st.integers(1, 96), mode=st.sampled_from(["pad", "crop"]),
       equalize=st.booleans())
def test_preprocess_output_contract(img: np.ndarray, size: int, mode: str,
                                    equalize: bool) -> None:
    valid = True
    try:
        check_unit_range(np.asarray(img, np.float32).reshape(img.shape[-2:]), "probe")
    except DataError:
        valid = False
    with time_limit(10, f"preprocess({img.shape}, {img.dtype}, {size}, {mode})"):
        if not valid:
            with pytest.raises(DataError, match="fuzz-image"):
                preprocess(img, size, mode, equalize, name="fuzz-image")
            return
        out = preprocess(img, size, mode, equalize, name="fuzz-image")
    assert out.dtype == np.float32 and out.shape == (size, size)
    assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0
    assert out.flags.c_contiguous and to_tensor(out).shape == (1, size, size)
    src = np.asarray(img, np.float64).reshape(img.shape[-2:])
    if not equalize and src.min() == src.max():  # a constant image stays that constant
        c = float(src.flat[0])
        region = out if mode == "crop" else out[out > 0] if c > 0 else out
        np.testing.assert_allclose(region, c, atol=1e-3)
    if not equalize and mode == "crop":  # no new intensities beyond the input's range
        assert out.min() >= src.min() - 1e-3 and out.max() <= src.max() + 1e-3


@given(shape=st.sampled_from([(0, 5), (5, 0), (2, 3, 4), (3,), ()]),
       size=st.integers(1, 8))
def test_preprocess_rejects_non_images(shape: tuple[int, ...], size: int) -> None:
    with pytest.raises(DataError, match="fuzz-image"):
        preprocess(np.zeros(shape, np.float32), size, name="fuzz-image")


@given(size=st.sampled_from([0, -3, 2.5]), mode=st.sampled_from(["pad", "squash"]))
def test_preprocess_rejects_bad_arguments(size: float, mode: str) -> None:
    with pytest.raises(DataError, match="fuzz-image"):
        preprocess(np.zeros((4, 4), np.float32), size, mode, name="fuzz-image")  # type: ignore
