"""PNG / JPEG / TIFF radiographs -> float32 [H, W] in [0, 1]; and ``load_image`` for any file.

Intensity ranges, stated once (the most common complaint in torchxrayvision's issues is a
wrong range):

- 8-bit images are divided by 255; 16-bit images by 65535 (the container's range, so all
  images of one dataset share one scale). A 16-bit image whose maximum is below 4096 is
  probably 12-bit data: a ``UserWarning`` suggests ``rescale="minmax"``.
- 32-bit integer or float images (TIFF) are already in [0, 1] or are min-max stretched
  (with a warning). NaN/Inf pixels raise :class:`ImageReadError` (a ``DataError``).
- ``rescale="minmax"`` stretches each image's own min..max to [0, 1] instead.
- Colour images: when R, G and B are equal (gray saved as RGB, common for CXR JPEGs) the
  first channel is taken silently; real colour is converted to luminance with a warning.

Very large images are reduced while reading when ``max_side`` is given: JPEGs are decoded
directly at 1/2, 1/4 or 1/8 scale (``Image.draft``), other formats are reduced by an integer
factor right after decoding (``Image.reduce``), before any float copy exists.

Pillow is imported inside the functions.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from radjepa_lab.errors import ImageReadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def _check_file(p: Path, error: type[Exception]) -> None:
    if not p.exists():
        raise error(f"{p}: file does not exist. Check the path (cwd is {Path.cwd()}).")
    if p.is_dir():
        raise error(f"{p}: is a folder, not an image file. Use FolderDataset for folders.")
    if p.stat().st_size == 0:
        raise error(f"{p}: file is empty (0 bytes); re-export or re-download it.")


def read_image(path: str | Path, max_side: int | None = None,
               rescale: Literal["container", "minmax"] = "container") -> np.ndarray:
    """Read a PNG/JPEG/TIFF radiograph as float32 [H, W] in [0, 1] (see module docstring)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    _check_file(p, ImageReadError)
    if rescale not in ("container", "minmax"):
        raise ImageReadError(f"{p}: rescale={rescale!r}; use 'container' or 'minmax'.")
    try:
        with Image.open(p) as im:
            if max_side and im.format == "JPEG" and max(im.size) > 2 * max_side:
                im.draft(im.mode, (max(max_side, im.size[0] // 8), max(max_side, im.size[1] // 8)))
            im.load()
            if max_side and max(im.size) >= 2 * max_side:
                im = im.reduce(max(im.size) // max_side)
            arr = _to_gray(im, p)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{p}: image is too large for Pillow's safety limit ({e}). Pass "
                             "max_side or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it.") from e
    except PermissionError as e:
        raise ImageReadError(f"{p}: cannot be read: permission denied. Fix the file's "
                             "permissions (chmod +r) or copy it somewhere readable.") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{p}: cannot decode image ({type(e).__name__}: {e}). The file is "
                             "corrupt, truncated or not an image.") from e
    return _to_unit(arr, p, rescale)


def _to_gray(im, p: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(im)[..., 0]
    rgb = np.asarray(im.convert("RGB"))
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    warnings.warn(f"{p}: colour image (mode {mode}); converted to grayscale luminance "
                  "(0.299 R + 0.587 G + 0.114 B).", UserWarning, stacklevel=3)
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(
        np.uint8)


def _to_unit(arr: np.ndarray, p: Path, rescale: str) -> np.ndarray:
    if arr.ndim != 2 or arr.size == 0:
        raise ImageReadError(f"{p}: expected a 2-D image, got shape {arr.shape}.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageReadError(f"{p}: image contains NaN/Inf pixels; fix the export.")
    if rescale == "minmax":
        a = arr.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1 / 255)
    if arr.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
        if int(arr.max()) < 4096:
            warnings.warn(f"{p}: 16-bit image with max {int(arr.max())} < 4096 (12-bit data?); "
                          "it will look dark at /65535. Pass rescale='minmax' to stretch it.",
                          UserWarning, stacklevel=3)
        return arr.astype(np.float32) * np.float32(1 / 65535)
    a = arr.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return a
    warnings.warn(f"{p}: {arr.dtype} image with range [{lo:g}, {hi:g}] is not in [0, 1]; "
                  "min-max stretched.", UserWarning, stacklevel=3)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def load_image(path: str | Path, apply_voi: bool = True, max_side: int | None = None) -> np.ndarray:
    """Any supported file -> float32 [H, W] in [0, 1], air dark. The content decides:
    a file with the DICOM magic is read as DICOM whatever its name; a ``.dcm`` file without it
    raises :class:`DicomReadError`; everything else goes to :func:`read_image`."""
    from radjepa_lab.data.dicom import is_dicom, read_dicom

    p = Path(path)
    if is_dicom(p) or p.suffix.lower() in DICOM_SUFFIXES:
        return read_dicom(p, apply_voi=apply_voi)[0]
    return read_image(p, max_side=max_side)
