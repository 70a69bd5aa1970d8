"""The kit's exception types.

Every error names the file or field at fault and says how to fix it, so a
student reading a traceback in a notebook knows what to do next.
"""

from __future__ import annotations


class RadJEPALabError(Exception):
    """Base class for every error the kit raises on purpose."""


class DataError(RadJEPALabError):
    """A data file, folder or manifest could not be used."""


class DicomReadError(DataError):
    """A DICOM file could not be decoded (truncated, no PixelData, missing decoder...)."""


class ImageReadError(DataError):
    """A PNG/JPEG/TIFF file could not be decoded."""


class ManifestError(DataError):
    """A CSV manifest has missing columns or invalid labels."""


class ConfigError(RadJEPALabError):
    """A configuration value or preset name is invalid."""


class CheckpointError(RadJEPALabError):
    """A checkpoint is missing, corrupt, unsafe to load, or in an unknown format."""


class TrainingError(RadJEPALabError):
    """Training had to stop (e.g. a NaN/Inf loss); the last good checkpoint is kept."""
