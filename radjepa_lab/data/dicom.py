"""DICOM radiographs -> float32 image in [0, 1] (air dark) plus the metadata the kit uses.

The order of operations is the one the DICOM standard prescribes, so that what a student sees
matches what a PACS viewer shows:

1. decode the stored values (pydicom honours BitsStored and PixelRepresentation: unused high
   bits are masked, signed values are sign-extended; a HighBit other than BitsStored - 1 is
   refused, since pydicom would mask the wrong bits);
2. Modality LUT, 3. VOI LUT, 4. Presentation (MONOCHROME1 / INVERSE inverted so air is always
   dark), with Pixel Padding left out: :mod:`radjepa_lab.data.dicom_display`, which checks every
   attribute that changes the display and honours it or refuses it naming the attribute.

Decisions a student should know about:
- multi-frame files: frame ``frame`` (default 0) is returned; a ``UserWarning`` says so when
  the file has several frames and no frame was asked for; an enhanced file's per-frame Rescale
  and Window (functional groups) are applied to that frame;
- colour (RGB/YBR) files are converted to luminance with a ``UserWarning``; PALETTE COLOR files
  are first mapped through their palette (pydicom's ``apply_color_lut``);
- a DICOMDIR (a media directory index) is refused with a message saying what it is;
- a pixel spacing of 0 (as in pydicom-data's RG1_UNCR.dcm) is reported as unknown (``None``).

pydicom is imported inside the functions (the training path must not need it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radjepa_lab.data.dicom_display import display_plan, lift_frame_groups, to_display
from radjepa_lab.errors import DicomReadError

# Which package decodes which compressed transfer syntax (for the error message).
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": "pillow or pylibjpeg + pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg + pylibjpeg-libjpeg, or pyjpegls (or python-gdcm)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg + pylibjpeg-libjpeg, or pyjpegls (or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg + pylibjpeg-openjpeg, or pillow built with OpenJPEG",
    "1.2.840.10008.1.2.4.91": "pylibjpeg + pylibjpeg-openjpeg, or pillow built with OpenJPEG",
    "1.2.840.10008.1.2.4.201": "pylibjpeg + pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg + pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg + pylibjpeg-openjpeg (HTJ2K)",
}
_GENERIC_HINT = "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"
MEDIA_DIRECTORY_UID = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT")


@dataclass
class DicomMeta:
    """What the kit keeps from a DICOM header (``None`` where the file does not say)."""

    path: str
    rows: int
    columns: int
    photometric_interpretation: str
    bits_stored: int
    bits_allocated: int
    pixel_representation: int
    pixel_spacing: tuple[float, float] | None = None  # (row, column) mm
    view_position: str | None = None
    sex: str | None = None
    age: str | None = None  # DICOM Age String, e.g. "045Y"
    age_years: float | None = None
    modality: str | None = None
    transfer_syntax: str | None = None
    n_frames: int = 1
    frame: int = 0
    voi: str = "none"  # "voi_lut_sequence" | "window" | "none"
    inverted: bool = False
    stored_range: tuple[float, float] = (0.0, 0.0)  # min/max after the Modality LUT
    extra: dict[str, Any] = field(default_factory=dict)


def _age_years(age: str | None) -> float | None:
    if not age or len(age) < 2 or not age[:-1].strip().isdigit():
        return None
    n, unit = float(age[:-1]), age[-1].upper()
    return {"Y": n, "M": n / 12, "W": n / 52.1775, "D": n / 365.25}.get(unit)


def _spacing(ds: Any) -> tuple[float, float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        val = ds.get(key)
        if val is not None and len(val) == 2:
            r, c = float(val[0]), float(val[1])
            if r > 0 and c > 0:
                return (r, c)
    return None


def _str_or_none(val: Any) -> str | None:
    s = str(val).strip() if val is not None else ""
    return s or None


def read_dicom_header(path: str | Path) -> Any:
    """``pydicom.dcmread`` with the kit's errors (missing file, not DICOM, unreadable)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.exists():
        raise DicomReadError(f"{p}: file does not exist. Check the path (cwd is {Path.cwd()}).")
    if p.is_dir():
        raise DicomReadError(f"{p}: is a folder, not a DICOM file. Use FolderDataset for folders.")
    if p.stat().st_size == 0:
        raise DicomReadError(f"{p}: file is empty (0 bytes); re-export or re-download it.")
    try:
        return pydicom.dcmread(p)
    except PermissionError as e:
        raise DicomReadError(f"{p}: cannot be read: permission denied. Fix the file's "
                             "permissions (chmod +r) or copy it somewhere readable.") from e
    except InvalidDicomError as e:
        raise DicomReadError(
            f"{p}: not a DICOM file (no 'DICM' preamble / file meta header). If it is an image "
            "with a .dcm name, rename it; if it is a headerless DICOM, re-save it with a header."
        ) from e
    except Exception as e:  # truncated headers, bad element lengths ...
        raise DicomReadError(f"{p}: cannot parse DICOM header ({type(e).__name__}: {e}). "
                             "The file is probably truncated or corrupt.") from e


def read_dicom(path: str | Path, apply_voi: bool = True,
               frame: int | None = None) -> tuple[np.ndarray, DicomMeta]:
    """Read a DICOM radiograph as float32 [H, W] in [0, 1] with air dark, plus its metadata."""
    try:
        return _read_dicom(path, apply_voi, frame)
    except DicomReadError:
        raise
    except Exception as e:  # a corrupt header value pydicom kept as-is (fuzzing finds these)
        raise DicomReadError(
            f"{path}: cannot interpret the DICOM header ({type(e).__name__}: {e}). A value such "
            "as RescaleSlope, WindowCenter, BitsStored or NumberOfFrames is corrupt; re-export "
            "the file."
        ) from e


def _check_pixel_module(ds: Any, p: Path, photometric: str) -> None:
    """The Image Pixel attributes pydicom decodes by: refuse what it would decode wrongly."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", *COLOUR):
        raise DicomReadError(f"{p}: PhotometricInterpretation {photometric!r} is not one the kit "
                             "can display (MONOCHROME1/2, PALETTE COLOR, RGB, YBR_*).")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp not in (1, 3):
        raise DicomReadError(f"{p}: SamplesPerPixel {spp} is not 1 (gray) or 3 (colour).")
    if (spp == 3) != (photometric in COLOUR):
        raise DicomReadError(f"{p}: PhotometricInterpretation {photometric!r} does not match "
                             f"SamplesPerPixel {spp}; the header is inconsistent.")
    if "PixelData" not in ds:  # float pixel data has no BitsStored/HighBit
        return
    alloc = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", alloc) or alloc)
    if alloc not in (1, 8, 16, 32):
        raise DicomReadError(f"{p}: BitsAllocated {alloc} is not 1, 8, 16 or 32.")
    if not 1 <= stored <= alloc:
        raise DicomReadError(f"{p}: BitsStored {stored} must lie in 1..BitsAllocated ({alloc}).")
    high = int(ds.get("HighBit", stored - 1))
    if high != stored - 1:
        raise DicomReadError(
            f"{p}: HighBit {high} with BitsStored {stored}: the stored bits do not start at bit "
            f"0, which pydicom cannot decode (it would keep the wrong {stored} bits). Re-export "
            "the image with HighBit = BitsStored - 1.")
    if int(ds.get("PixelRepresentation", 0) or 0) not in (0, 1):
        raise DicomReadError(f"{p}: PixelRepresentation {ds.PixelRepresentation} is not 0 "
                             "(unsigned) or 1 (signed).")


def _decode(ds: Any, p: Path, ts: Any) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as e:
        msg = str(e)
        if ts is not None and ts.is_compressed and ("plugin" in msg or "decod" in msg.lower()
                                                    or "decompress" in msg):
            hint = _DECODER_HINTS.get(str(ts), _GENERIC_HINT)
            raise DicomReadError(
                f"{p}: compressed transfer syntax '{ts.name}' ({ts}) but no installed decoder "
                f"can read it. Install one: pip install {hint}. (pydicom said: {msg})"
            ) from e
        if "less than expected" in msg or "length" in msg.lower():
            raise DicomReadError(f"{p}: pixel data is truncated or inconsistent with the header "
                                 f"(Rows/Columns/BitsAllocated). pydicom said: {msg}") from e
        raise DicomReadError(f"{p}: cannot decode pixel data ({type(e).__name__}: {msg}).") from e


def _colour_to_gray(arr: np.ndarray, ds: Any, p: Path, photometric: str) -> np.ndarray:
    """RGB (pydicom returns RGB for YBR_*) or palette indices -> luminance, with a warning."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:
            raise DicomReadError(f"{p}: PALETTE COLOR image whose palette (Red/Green/Blue "
                                 f"Palette Color Lookup Table) cannot be applied "
                                 f"({type(e).__name__}: {e}).") from e
        how = "mapped through its palette and converted"
    else:
        how = "converted"
    warnings.warn(f"{p}: colour DICOM ({photometric}); {how} to grayscale luminance "
                  "(0.299 R + 0.587 G + 0.114 B).", UserWarning, stacklevel=4)
    gray = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lo, hi = float(gray.min()), float(gray.max())
    return ((gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)).astype(np.float32)


def _read_dicom(path: str | Path, apply_voi: bool,
                frame: int | None) -> tuple[np.ndarray, DicomMeta]:
    p = Path(path)
    ds = read_dicom_header(p)
    sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if sop == MEDIA_DIRECTORY_UID or "DirectoryRecordSequence" in ds:
        raise DicomReadError(f"{p}: is a DICOMDIR (a media directory index that lists other "
                             "files), not an image. Point the kit at the folder that holds it; "
                             "FolderDataset skips DICOMDIR files.")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomReadError(
            f"{p}: has no PixelData ({p.stat().st_size} bytes). It is either truncated before "
            "the image or a non-image object (report, presentation state); re-export the image."
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    _check_pixel_module(ds, p, photometric)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    arr = _decode(ds, p, ts)
    spp = int(ds.get("SamplesPerPixel", 1))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames == 1 and arr.ndim == (4 if spp > 1 else 3):  # pydicom found excess frames
        n_frames = arr.shape[0]
    if n_frames > 1:
        if frame is None:
            warnings.warn(f"{p}: multi-frame DICOM ({n_frames} frames); returning frame 0. "
                          "Pass frame=k to pick another.", UserWarning, stacklevel=3)
        k = 0 if frame is None else int(frame)
        if not 0 <= k < n_frames:
            raise DicomReadError(f"{p}: frame={k} out of range, the file has {n_frames} frames.")
        arr = arr[k]
        lift_frame_groups(ds, k)
    else:
        k = 0
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # min/max stretch would hide it
        raise DicomReadError(f"{p}: pixel data contains NaN/Inf values; the file is corrupt.")
    if photometric in COLOUR or photometric == "PALETTE COLOR" or arr.ndim == 3:
        img = _colour_to_gray(arr, ds, p, photometric)
        voi, inverted, stored_range = "none", False, (float(img.min()), float(img.max()))
    else:
        plan = display_plan(ds, p, apply_voi, photometric)
        voi, inverted = plan.voi, plan.invert
        img, stored_range = to_display(arr, ds, plan, p)
    if img.ndim != 2:
        raise DicomReadError(f"{p}: decoded pixels have shape {arr.shape}; Rows, Columns, "
                             "SamplesPerPixel and NumberOfFrames disagree with the data.")
    meta = DicomMeta(
        path=str(p),
        rows=int(ds.get("Rows", img.shape[0])),
        columns=int(ds.get("Columns", img.shape[1])),
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "")).strip(),
        bits_stored=int(ds.get("BitsStored", 0) or 0),
        bits_allocated=int(ds.get("BitsAllocated", 0) or 0),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        pixel_spacing=_spacing(ds),
        view_position=_str_or_none(ds.get("ViewPosition")),
        sex=_str_or_none(ds.get("PatientSex")),
        age=_str_or_none(ds.get("PatientAge")),
        age_years=_age_years(_str_or_none(ds.get("PatientAge"))),
        modality=_str_or_none(ds.get("Modality")),
        transfer_syntax=str(ts) if ts is not None else None,
        n_frames=n_frames,
        frame=k,
        voi=voi,
        inverted=inverted,
        stored_range=stored_range,
    )
    return img, meta


def is_dicom(path: str | Path) -> bool:
    """True when the file has the DICM magic at byte 128 (content, not extension, decides)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicomdir(path: str | Path) -> bool:
    """True for a DICOMDIR: named ``DICOMDIR`` (the name the standard gives it), or a DICOM file
    whose media storage SOP class is the Media Storage Directory."""
    p = Path(path)
    if p.name.upper() == "DICOMDIR":
        return True
    if not is_dicom(p):
        return False
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(p)
    except Exception:
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY_UID


# ----------------------------------------------------------------------------- teaching


@dataclass
class DicomStep:
    """One stage of DICOM display processing, for the step-by-step figure."""

    title: str
    image: np.ndarray
    note: str


def dicom_steps(path: str | Path, every: int = 4) -> list[DicomStep]:
    """The stages :func:`radjepa_lab.data.dicom.read_dicom` runs, kept apart for teaching.

    Stored values -> Modality LUT -> VOI LUT -> MONOCHROME1 inversion (pydicom's own
    ``apply_modality_lut`` / ``apply_voi_lut``). Images are subsampled by ``every`` for display
    only; the last stage is ``read_dicom``'s own output, so the figure shows the kit's result.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    bits = int(ds.get("BitsStored", 16))
    steps = [DicomStep("1. stored values", raw[::every, ::every].astype(np.float64),
                       f"{raw.dtype}, {bits} bits stored, range {raw.min()}..{raw.max()}")]
    mod = np.asarray(apply_modality_lut(raw, ds), np.float64)
    has_rescale = "RescaleSlope" in ds or "ModalityLUTSequence" in ds
    steps.append(DicomStep(
        "2. Modality LUT", mod[::every, ::every],
        (f"slope {ds.get('RescaleSlope', 1)}, intercept {ds.get('RescaleIntercept', 0)}"
         if has_rescale else "no Rescale/LUT in the header: identity")))
    voi = np.asarray(apply_voi_lut(mod, ds, index=0), np.float64)
    if "VOILUTSequence" in ds:
        how = "VOI LUT Sequence"
    elif "WindowCenter" in ds:
        how = f"window centre {ds.WindowCenter}, width {ds.WindowWidth}"
    else:
        how = "no VOI in the header: kit stretches min..max"
    steps.append(DicomStep("3. VOI LUT", voi[::every, ::every], how))
    img, meta = read_dicom(path)
    pi = meta.photometric_interpretation
    steps.append(DicomStep(
        "4. kit output (read_dicom)", img[::every, ::every],
        f"{pi}: {'inverted so air is dark' if meta.inverted else 'not inverted'}; [0, 1]"))
    return steps


# ----------------------------------------------------------------------------- writing


def dicom_dataset(rows: int, cols: int, transfer_syntax: str | None = None, *,
                  bits: int = 16, bits_stored: int | None = None, signed: bool = False,
                  spp: int = 1, photometric: str = "MONOCHROME2") -> Any:
    """A minimal DX ``pydicom.Dataset`` with file meta and the pixel-format tags set; the
    caller sets ``PixelData`` (and any other tag). The kit's one DICOM builder, used by
    :func:`write_dicom`, the bad-input corpus and the DICOM benchmark."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "SYNTHETIC"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    if spp > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    return ds


def write_dicom(path: str | Path, stored: np.ndarray, *, bits_allocated: int = 16,
                bits_stored: int | None = None, signed: bool = False,
                photometric: str = "MONOCHROME2", slope: float | None = None,
                intercept: float | None = None, window: tuple[float, float] | None = None,
                voi_lut: tuple[list[int], list[int]] | None = None,
                raw_bytes: bytes | None = None, with_pixels: bool = True, **tags: Any) -> Path:
    """Write an uncompressed single-frame DICOM whose stored values are ``stored`` [rows, cols].

    For tests, benchmarks and exporting phantoms. ``raw_bytes`` overrides the pixel bytes
    (e.g. to put garbage above BitsStored); ``voi_lut`` is (LUTDescriptor, LUTData); other
    keyword arguments are set as tags (``PatientName="SYNTHETIC"``).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = dicom_dataset(*stored.shape, bits=bits_allocated, bits_stored=bits_stored,
                       signed=signed, photometric=photometric)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = voi_lut[0]
        item.add_new(0x00283006, "US", list(voi_lut[1]))  # LUTData
        ds.VOILUTSequence = Sequence([item])
    for k, v in tags.items():
        setattr(ds, k, v)
    if with_pixels:
        if raw_bytes is None:
            kind = ("<i" if signed else "<u") + "2" if bits_allocated == 16 else (
                "i1" if signed else "u1")
            raw_bytes = np.ascontiguousarray(stored.astype(kind)).tobytes()
        ds.PixelData = raw_bytes
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path
