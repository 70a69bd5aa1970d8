"""DICOM's grayscale display pipeline: stored values -> [0, 1] with air dark, as a viewer shows it.

The stages are the standard's (PS3.4 Annex N, PS3.3 C.11), in its order:

1. **Modality LUT**: a Modality LUT Sequence, else Rescale Slope/Intercept (pydicom's
   ``apply_modality_lut``; when both are present the sequence wins, as in pydicom);
2. **VOI LUT**: a VOI LUT Sequence (8 or 10-16 bit entries), else Window Center/Width with its
   VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID; pydicom's ``apply_voi_lut``), mapped to
   [0, 1] over the VOI output range, so values outside the window saturate; without a VOI, the
   image's own min..max;
3. **Presentation**: a Presentation LUT Sequence, else Presentation LUT Shape and Photometric
   Interpretation: MONOCHROME1 (and INVERSE) are inverted so air is dark.

Pixel Padding Value (and Range Limit) pixels are left out of every range and shown black.
Enhanced multi-frame files keep Rescale and Window per frame in functional groups; they are
lifted to the top level for the frame read (:func:`lift_frame_groups`).

:func:`display_plan` checks every attribute first: each is honoured or refused with a
:class:`DicomReadError` naming the file and the attribute. The kit's own code replaces pydicom
in three places, each a case where pydicom's result is not what a viewer shows:

* the window's output range is found by pushing -inf/+inf through pydicom's own windowing, so
  below-window values are black even with a negative Rescale Slope (pydicom's ``y_min`` is then
  the larger end);
* a Presentation LUT Sequence is indexed with the VOI output range (pydicom's
  ``apply_presentation_lut`` stretches each image's own min..max into it);
* a VOI LUT Sequence is applied by the kit (clip the input to the LUT's entries, look up):
  pydicom 3.0 builds its index array in the LUT's output type, so an 8-bit LUT with more than
  256 entries (a 12-bit input mapped to 8-bit output, common) wraps its indices modulo 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radjepa_lab.errors import DicomReadError

__all__ = ["DisplayPlan", "display_plan", "lift_frame_groups", "to_display"]

VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
PLUT_SHAPES = ("IDENTITY", "INVERSE")


@dataclass
class DisplayPlan:
    """What :func:`to_display` will do with one monochrome image (all attributes checked)."""

    voi: str  # "voi_lut_sequence" | "window" | "none"
    voi_lut: tuple[int, np.ndarray, int] | None = None  # (first mapped, data, bits) of the LUT
    invert: bool = False  # MONOCHROME1, or Presentation LUT Shape INVERSE
    plut: np.ndarray | None = None  # a Presentation LUT Sequence's table, as [0, 1]
    padding: tuple[int, int] | None = None  # stored values that are padding, inclusive


def _fail(p: Path, attr: str, problem: str) -> DicomReadError:
    return DicomReadError(f"{p}: {attr} {problem}")


def _lut(item: Any, ds: Any, p: Path, where: str, bits_ok: tuple[int, ...],
         ) -> tuple[int, int, int, np.ndarray]:
    """(entries, first mapped value, bits, data) of a LUT item, checked against its descriptor."""
    desc = item.get("LUTDescriptor")
    if desc is None or len(desc) != 3 or "LUTData" not in item:
        raise _fail(p, f"{where} LUTDescriptor/LUTData", "are missing or malformed; the LUT "
                    "cannot be applied. Re-export the image.")
    n, first, bits = int(desc[0]) or 2**16, int(desc[1]), int(desc[2])
    if bits not in bits_ok:
        raise _fail(p, f"{where} LUTDescriptor", f"bit depth {bits} is not supported (DICOM "
                    f"allows {bits_ok[0]}..{bits_ok[-1]}).")
    elem = item["LUTData"]
    if elem.VR == "OW" or isinstance(elem.value, bytes):
        little = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        order = "<" if little is None or little.is_little_endian else ">"
        data = np.frombuffer(bytes(elem.value), dtype=f"{order}u2")[:n].astype(np.int64)
    else:
        v = elem.value
        data = np.asarray(v if hasattr(v, "__len__") else [v], dtype=np.int64)
    if len(data) != n:
        raise _fail(p, f"{where} LUTData", f"holds {len(data)} entries but its LUTDescriptor "
                    f"says {n}; the LUT is corrupt.")
    if data.size and (data.min() < 0 or data.max() > 2**bits - 1):
        raise _fail(p, f"{where} LUTData", f"has values up to {int(data.max())} but its "
                    f"LUTDescriptor says {bits} bits (max {2**bits - 1}); the LUT is corrupt.")
    return n, first, bits, data


def _number(ds: Any, p: Path, attr: str, index: int = 0) -> float:
    v = ds[attr].value
    if isinstance(v, list | tuple) or getattr(ds[attr], "VM", 1) > 1:
        v = v[index]
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise _fail(p, attr, f"{v!r} is not a number; the header is corrupt.") from None
    if not math.isfinite(x):
        raise _fail(p, attr, f"{v!r} is not finite; the header is corrupt.")
    return x


def lift_frame_groups(ds: Any, frame: int) -> None:
    """Copy the frame's Pixel Value Transformation (Rescale) and Frame VOI LUT (Window) from
    the enhanced multi-frame functional groups (per-frame over shared) to the top level, where
    the pipeline reads them, unless the top level already has its own."""
    groups = []
    for name, idx in (("SharedFunctionalGroupsSequence", 0),
                      ("PerFrameFunctionalGroupsSequence", frame)):
        seq = ds.get(name)
        if seq is not None and len(seq) > idx:
            groups.append(seq[idx])
    lifted: dict[str, Any] = {}
    for g in groups:  # per-frame last, so it overrides shared
        for seq_name, attrs in (("PixelValueTransformationSequence",
                                 ("RescaleSlope", "RescaleIntercept")),
                                ("FrameVOILUTSequence",
                                 ("WindowCenter", "WindowWidth", "VOILUTFunction"))):
            seq = g.get(seq_name)
            if seq:
                lifted.update({a: seq[0][a].value for a in attrs if a in seq[0]})
    for attr, value in lifted.items():
        if attr not in ds:
            setattr(ds, attr, value)


def display_plan(ds: Any, p: Path, apply_voi: bool, photometric: str) -> DisplayPlan:
    """Check every attribute that changes how a monochrome image is displayed; DicomReadError
    naming the file and the attribute for each one that cannot be honoured."""
    # -- Modality LUT
    if ds.get("ModalityLUTSequence"):
        _lut(ds.ModalityLUTSequence[0], ds, p, "ModalityLUTSequence", (8, 16))
    elif ("RescaleSlope" in ds) != ("RescaleIntercept" in ds):
        have = "RescaleSlope" if "RescaleSlope" in ds else "RescaleIntercept"
        raise _fail(p, have, "is present without its partner (Rescale Slope and Intercept come "
                    "together); the Modality LUT is ambiguous. Re-export the image.")
    elif "RescaleSlope" in ds:
        if _number(ds, p, "RescaleSlope") == 0:
            raise _fail(p, "RescaleSlope", "is 0: every pixel would have the same value "
                        "(RescaleIntercept); the header is corrupt.")
        _number(ds, p, "RescaleIntercept")
    # -- VOI LUT
    plan = DisplayPlan(voi="none")
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds or "WindowWidth" in ds
    if has_lut:
        _, first, bits, data = _lut(ds.VOILUTSequence[0], ds, p, "VOILUTSequence",
                                    (8, *range(10, 17)))
        plan.voi_lut = (first, data, bits)
    elif has_window:
        if not ("WindowCenter" in ds and "WindowWidth" in ds):
            have = "WindowCenter" if "WindowCenter" in ds else "WindowWidth"
            raise _fail(p, have, "is present without its partner (Window Center and Width "
                        "come together); the VOI window is ambiguous.")
        func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if func not in VOI_FUNCTIONS:
            raise _fail(p, "VOILUTFunction", f"{func!r} is not one of {VOI_FUNCTIONS}; the "
                        "window cannot be applied.")
        _number(ds, p, "WindowCenter")
        width = _number(ds, p, "WindowWidth")
        if width < 1 if func == "LINEAR" else width <= 0:
            raise _fail(p, "WindowWidth", f"{width:g} is not a valid width for a {func} window "
                        f"({'>= 1' if func == 'LINEAR' else '> 0'}).")
    if apply_voi and has_lut:
        plan.voi = "voi_lut_sequence"
    elif apply_voi and has_window:
        plan.voi = "window"
    # -- Presentation
    if ds.get("PresentationLUTSequence"):
        n, first, bits, data = _lut(ds.PresentationLUTSequence[0], ds, p,
                                    "PresentationLUTSequence", tuple(range(8, 17)))
        if first != 0:
            raise _fail(p, "PresentationLUTSequence LUTDescriptor", f"first mapped value is "
                        f"{first}; DICOM requires 0.")
        plan.plut = (data / (2**bits - 1)).astype(np.float32)
    else:
        shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
        if shape and shape not in PLUT_SHAPES:
            raise _fail(p, "PresentationLUTShape", f"{shape!r} is not one of {PLUT_SHAPES}.")
        if photometric == "MONOCHROME1" and shape == "IDENTITY":
            raise _fail(p, "PresentationLUTShape", "IDENTITY contradicts PhotometricInterpret"
                        "ation MONOCHROME1 (the standard requires INVERSE with MONOCHROME1), so "
                        "which way is air cannot be told; fix one of the two attributes.")
        plan.invert = photometric == "MONOCHROME1" or shape == "INVERSE"
    # -- Pixel padding
    if "PixelPaddingValue" in ds:
        lo = _stored(ds, p, "PixelPaddingValue")
        hi = _stored(ds, p, "PixelPaddingRangeLimit") if "PixelPaddingRangeLimit" in ds else lo
        plan.padding = (min(lo, hi), max(lo, hi))
    elif "PixelPaddingRangeLimit" in ds:
        raise _fail(p, "PixelPaddingRangeLimit", "is present without PixelPaddingValue; the "
                    "padding range is undefined.")
    return plan


def _stored(ds: Any, p: Path, attr: str) -> int:
    """A stored-value attribute (US or SS by Pixel Representation) as the signed/unsigned int
    the decoded pixels use."""
    v = int(_number(ds, p, attr))
    bits = int(ds.get("BitsStored", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1 and v >= 2 ** (bits - 1):
        v -= 2**bits  # written as US, meant as SS
    return v


def _window_range(ds: Any, span: float) -> tuple[float, float]:
    """VOI output for -inf and +inf (black and white), through pydicom's own windowing."""
    from pydicom.pixels import apply_voi_lut

    probe = np.array([-1e3 * span, 1e3 * span], dtype=np.float64)
    with np.errstate(over="ignore"):
        out = np.asarray(apply_voi_lut(probe, ds, index=0), dtype=np.float64)
    return float(out[0]), float(out[1])


def _display(mod: np.ndarray, ds: Any, plan: DisplayPlan,
             stretch: tuple[float, float]) -> np.ndarray:
    """Modality values -> [0, 1] display values: VOI (or min..max stretch), then presentation."""
    from pydicom.pixels import apply_voi_lut

    if plan.voi == "voi_lut_sequence" and plan.voi_lut is not None:
        # values below the first mapped value take the first entry, above the last the last
        first, data, bits = plan.voi_lut
        idx = np.clip(np.floor(mod).astype(np.int64) - first, 0, len(data) - 1)
        out, lo, hi = data[idx].astype(np.float64), 0.0, float(2**bits - 1)
    elif plan.voi == "window":
        span = max(abs(float(np.min(mod))), abs(float(np.max(mod))), 1.0)
        with np.errstate(over="ignore"):
            out = np.asarray(apply_voi_lut(mod.astype(np.float64), ds, index=0), np.float64)
        lo, hi = _window_range(ds, span)
    else:
        out, (lo, hi) = mod.astype(np.float64, copy=False), stretch
    unit = (out - lo) / (hi - lo) if hi != lo else np.zeros_like(out)
    unit = np.clip(unit, 0.0, 1.0)
    if plan.plut is not None:
        idx = np.rint(unit * (len(plan.plut) - 1)).astype(np.int64)
        return plan.plut[idx]
    unit = unit.astype(np.float32)
    return 1.0 - unit if plan.invert else unit


def to_display(arr: np.ndarray, ds: Any, plan: DisplayPlan,
               p: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored values ``[H, W]`` -> float32 [0, 1] (air dark) and the range after the Modality
    LUT (padding excluded). Integer images of <= 16 bits go through a table of every value in
    [min, max] once (same numbers, ~10x faster than transforming every pixel in float64)."""
    from pydicom.pixels import apply_modality_lut

    pad = None
    if plan.padding is not None and arr.dtype.kind in "iu":
        pad = (arr >= plan.padding[0]) & (arr <= plan.padding[1])
        if pad.all():
            raise _fail(p, "PixelPaddingValue", f"{plan.padding} covers every pixel; there is no "
                        "image left to show.")
        if not pad.any():
            pad = None
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2:
        smin, smax = int(arr.min()), int(arr.max())
        values = np.arange(smin, smax + 1).astype(arr.dtype)
        mod = np.asarray(apply_modality_lut(values, ds))
        idx = arr - arr.dtype.type(smin) if arr.dtype.kind == "u" else (
            arr.astype(np.int32) - smin)
        used = mod if pad is None else mod[np.bincount(idx[~pad], minlength=len(values)) > 0]
        stored = (float(used.min()), float(used.max()))
        img = _display(mod, ds, plan, stored)[idx]
    else:
        mod = np.asarray(apply_modality_lut(arr, ds))
        used = mod if pad is None else mod[~pad]
        stored = (float(used.min()), float(used.max()))
        img = _display(mod, ds, plan, stored)
    if not np.isfinite(img).all() or not math.isfinite(stored[0] + stored[1]):
        raise DicomReadError(f"{p}: Modality/VOI LUT gives NaN/Inf values; the header "
                             "(RescaleSlope, WindowWidth, LUTs) is corrupt.")
    img = img.astype(np.float32, copy=False)
    if pad is not None:
        img[pad] = 0.0  # padding is no part of the image: shown black, like air
    return img, stored
