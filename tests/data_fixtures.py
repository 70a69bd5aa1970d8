"""Helpers for the data-layer tests: write small DICOM / image files with known pixel values."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(path: Path, stored: np.ndarray, *, bits_allocated: int = 16,
                bits_stored: int | None = None, signed: bool = False,
                photometric: str = "MONOCHROME2", slope: float | None = None,
                intercept: float | None = None, window: tuple[float, float] | None = None,
                voi_lut: tuple[list[int], list[int]] | None = None, raw_bytes: bytes | None = None,
                with_pixels: bool = True, **tags) -> Path:
    """Write an uncompressed single-frame DICOM whose stored values are ``stored``.

    ``raw_bytes`` overrides the pixel bytes (e.g. to put garbage above BitsStored);
    ``voi_lut`` is (LUTDescriptor, LUTData).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
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
            dt = {8: "u1", 16: "u2"}[bits_allocated]
            dt = ("<i" if signed else "<u") + dt[1] if bits_allocated == 16 else (
                "i1" if signed else "u1")
            raw_bytes = np.ascontiguousarray(stored.astype(dt)).tobytes()
        ds.PixelData = raw_bytes
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")
    return path
