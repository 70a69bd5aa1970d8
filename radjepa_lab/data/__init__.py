"""The data station: radiographs in (DICOM, PNG/JPEG/TIFF, manifests, torchxrayvision,
SYNTHETIC phantoms), float32 [0, 1] images out. Conventions: radjepa_lab.data.transforms.

Importing this package needs only numpy and torch; pydicom, Pillow and torchxrayvision are
imported inside the functions that use them.
"""

from radjepa_lab.data.datasets import CSVDataset, FolderDataset, XRVAdapter
from radjepa_lab.data.dicom import DicomMeta, read_dicom
from radjepa_lab.data.findings import FINDINGS, STRUCTURES, parse_report
from radjepa_lab.data.images import load_image, read_image
from radjepa_lab.data.phantom import (
    Phantom,
    PhantomBatch,
    PhantomConfig,
    PhantomDataset,
    generate_batch,
    generate_phantom,
    write_phantoms,
)
from radjepa_lab.data.transforms import preprocess

__all__ = [
    "FINDINGS", "STRUCTURES", "CSVDataset", "DicomMeta", "FolderDataset", "Phantom",
    "PhantomBatch", "PhantomConfig", "PhantomDataset", "XRVAdapter", "generate_batch",
    "generate_phantom", "load_image", "parse_report", "preprocess", "read_dicom", "read_image",
    "write_phantoms",
]
