"""PNG / JPEG / TIFF radiographs -> float32 [H, W] in [0, 1]; and ``load_image`` for any file.

Intensity ranges, stated once (the most common complaint in torchxrayvision's issues is a
wrong range):

- 8-bit images are divided by 255; 16-bit images by 65535 (the container's range, so all
  images of one dataset share one scale). A 16-bit PNG whose sBIT chunk declares n < 16
  significant bits and whose values all fit in n bits holds unscaled n-bit data: it is divided
  by 2**n - 1. Without sBIT, a 16-bit image whose maximum is below 4096 is probably 12-bit
  data: a ``UserWarning`` suggests ``rescale="minmax"``.
- 32-bit integer or float images (TIFF) are already in [0, 1] or are min-max stretched
  (with a warning). NaN/Inf pixels raise :class:`ImageReadError` (a ``DataError``).
- ``rescale="minmax"`` stretches each image's own min..max to [0, 1] instead.
- Colour images: when R, G and B are equal (gray saved as RGB, common for CXR JPEGs) the
  first channel is taken silently; real colour is converted to luminance with a warning.

What the file says about its display is honoured, or the file is refused naming the attribute:
palettes (PNG/TIFF/BMP "P" mode) are applied; an alpha channel or tRNS transparency is dropped
when every pixel is opaque and refused otherwise (what lies behind is undefined); an embedded
ICC profile is applied (to sRGB, with Pillow's ImageCms) or the file refused when it cannot be;
a PNG gAMA other than sRGB's 1/2.2 (and no sRGB/iCCP chunk) is converted to the sRGB-like
encoding of every other image; TIFF WhiteIsZero is inverted (Pillow inverts only 1- and 8-bit
ones); EXIF / TIFF orientation is applied (``ImageOps.exif_transpose``); a multi-page file gives
its first page with a warning.

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


def _png_sbit(p: Path) -> int | None:
    """The significant bits of a grayscale PNG's sBIT chunk (Pillow does not read it)."""
    import struct

    with open(p, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):
                return None
            body = f.read(length)
            f.seek(4, 1)  # CRC
            if kind == b"sBIT" and length >= 1:
                return body[0]


def read_image(path: str | Path, max_side: int | None = None,
               rescale: Literal["container", "minmax"] = "container") -> np.ndarray:
    """Read a PNG/JPEG/TIFF radiograph as float32 [H, W] in [0, 1] (see module docstring)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    _check_file(p, ImageReadError)
    if rescale not in ("container", "minmax"):
        raise ImageReadError(f"{p}: rescale={rescale!r}; use 'container' or 'minmax'.")
    try:
        with Image.open(p) as im:
            fmt, info = im.format, dict(im.info)
            pages = getattr(im, "n_frames", 1)
            white_is_zero = fmt == "TIFF" and im.tag_v2.get(262) == 0
            tile_args = im.tile[0].args if im.tile else None
            rawmode = tile_args[0] if isinstance(tile_args, tuple) else tile_args
            inverted_by_pillow = isinstance(rawmode, str) and rawmode.endswith(";I")
            if max_side and im.format == "JPEG" and max(im.size) > 2 * max_side:
                im.draft(im.mode, (max(max_side, im.size[0] // 8), max(max_side, im.size[1] // 8)))
            im.load()
            if max_side and max(im.size) >= 2 * max_side:
                im = im.reduce(max(im.size) // max_side)
            ImageOps.exif_transpose(im, in_place=True)  # EXIF / TIFF Orientation
            arr = _to_gray(im, p, info)
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
    if pages > 1:
        warnings.warn(f"{p}: {fmt} with {pages} pages/frames; returning the first.",
                      UserWarning, stacklevel=2)
    sbit = _png_sbit(p) if fmt == "PNG" else None
    unit = _to_unit(arr, p, rescale, sbit)
    if white_is_zero and not inverted_by_pillow:
        unit = 1.0 - unit  # TIFF PhotometricInterpretation WhiteIsZero: high values are dark
    gamma = info.get("gamma")
    if (fmt == "PNG" and gamma and "srgb" not in info and "icc_profile" not in info
            and abs(gamma * 2.2 - 1.0) > 0.01):
        unit = unit ** np.float32(1.0 / (gamma * 2.2))  # to the sRGB-like encoding
    return unit.astype(np.float32, copy=False)


_GRAY_MODES = ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _to_gray(im, p: Path, info: dict) -> np.ndarray:
    mode = im.mode
    if mode in _ALPHA_MODES or "transparency" in info:
        _refuse_transparency(im, p, mode, info)
    if info.get("icc_profile"):
        im = _apply_icc(im, p, info["icc_profile"])
        mode = im.mode
    if mode in _GRAY_MODES:
        return np.asarray(im)
    if mode in ("1", "LA", "La"):
        return np.asarray(im.convert("L"))
    try:
        rgb = np.asarray(im.convert("RGB"))  # palettes (P, PA), CMYK, YCbCr, RGBA...
    except ValueError as e:
        raise ImageReadError(f"{p}: image mode {mode} cannot be converted to gray ({e}); "
                             "re-export it as 8- or 16-bit grayscale.") from e
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    warnings.warn(f"{p}: colour image (mode {mode}); converted to grayscale luminance "
                  "(0.299 R + 0.587 G + 0.114 B).", UserWarning, stacklevel=3)
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(
        np.uint8)


def _refuse_transparency(im, p: Path, mode: str, info: dict) -> None:
    """Alpha (or tRNS) that is opaque everywhere is dropped; any transparent pixel is refused:
    what a viewer shows behind it (black, white, a checkerboard) is not in the file."""
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):  # 16-bit gray with a tRNS value
        t = info.get("transparency")
        transparent = t is not None and bool((np.asarray(im) == t).any())
    else:
        alpha = (im if mode in ("LA", "La") else im.convert("RGBA")).getchannel("A")
        transparent = alpha.getextrema()[0] < 255
    if transparent:
        raise ImageReadError(f"{p}: has transparent pixels (alpha channel or tRNS, mode "
                             f"{mode}); what lies behind them is undefined. Flatten the image "
                             "(remove its transparency) and re-export it.")


def _apply_icc(im, p: Path, icc: bytes):
    """Convert through the embedded ICC profile to sRGB (what a colour-managed viewer shows)."""
    import io

    from PIL import ImageCms

    base = {"LA": "L", "La": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB"}.get(
        im.mode, im.mode)  # alpha was checked opaque; palettes are RGB
    if base not in ("L", "RGB", "CMYK"):
        raise ImageReadError(f"{p}: has an embedded ICC profile on a mode {im.mode} image, "
                             "which the kit cannot colour-manage; re-export it without the "
                             "profile or as 8-bit.")
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im.convert(base) if base != im.mode else im, src,
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        raise ImageReadError(f"{p}: its embedded ICC profile cannot be applied ({e}); re-export "
                             "the image without the profile (or with one matching its "
                             "colour mode).") from e


def _to_unit(arr: np.ndarray, p: Path, rescale: str, sbit: int | None = None) -> np.ndarray:
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
        top = int(arr.max())
        if sbit is not None and 1 <= sbit < 16 and top < 2**sbit:
            return arr.astype(np.float32) * np.float32(1 / (2**sbit - 1))  # unscaled n-bit
        if sbit is None and top < 4096:
            warnings.warn(f"{p}: 16-bit image with max {top} < 4096 (12-bit data?); "
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
