"""The kit's exception types.

Every error names the file or field at fault and says how to fix it, so a
student reading a traceback in a notebook knows what to do next.
"""

from __future__ import annotations

import errno
from pathlib import Path


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


class TrainingInterrupted(TrainingError):
    """SIGINT (Ctrl-C) or SIGTERM stopped a run; ``checkpoint`` holds step ``step``, complete
    and resumable (``None`` when the signal came before the first step of this session)."""

    def __init__(self, message: str, step: int, checkpoint: Path | None, signum: int) -> None:
        super().__init__(message)
        self.step, self.checkpoint, self.signum = step, checkpoint, signum


class OutputError(RadJEPALabError):
    """An output folder or file cannot be written: a file in the way, no permission, a full
    disk, or another run writing to the same folder."""

    @classmethod
    def from_os(cls, e: OSError, path: str | Path, what: str) -> OutputError:
        """The kit's message for an OSError met while writing ``what`` to ``path``."""
        if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
            fix = "the disk is full (or over quota): free space or choose another output folder"
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = "no permission to write there: choose a writable output folder"
        elif e.errno in (errno.ENOTDIR, errno.EEXIST):
            fix = "a file is in the way of a folder: choose another output folder"
        else:
            fix = "check the folder and the disk"
        return cls(f"{path}: cannot write {what}: {e.strerror or e}; {fix}.")
