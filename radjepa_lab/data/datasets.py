"""Datasets of real radiographs, torchxrayvision style.

Items are dicts ``{"img": FloatTensor[1, S, S] in [0, 1], "lab": FloatTensor[F] (NaN =
unknown), "idx": int, "path": str}``; datasets expose ``.pathologies`` and ``.labels``
([N, F] float, NaN unknown). The intensity convention is stated once, in
:mod:`radjepa_lab.data.transforms`.

Bad files, two policies (``on_error``):

- ``"raise"`` (default): the first bad file raises a :class:`DataError` naming it. Missing and
  empty files are found when the dataset is built (fail fast); undecodable ones when read.
  Inside a DataLoader worker the error travels to the main process with the file name in its
  message, so a worker never dies silently.
- ``"skip"``: a bad file is recorded in ``.skipped`` as ``(path, reason)`` with a warning and
  the next readable item is returned instead; items carry ``"n_skipped"`` so a training loop
  can count skips even when they happened in worker processes (whose ``.skipped`` lists are
  their own). ``scan()`` decodes every file up front in the calling process and drops the
  bad ones, for a complete ``.skipped`` list; ``skip_report()`` gives the counts.
"""

from __future__ import annotations

import csv
import hashlib
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from radjepa_lab.data.images import DICOM_SUFFIXES, IMAGE_SUFFIXES, load_image
from radjepa_lab.data.transforms import check_unit_range, preprocess, to_tensor
from radjepa_lab.errors import DataError, ManifestError

OnError = Literal["raise", "skip"]


def close_loader(it: Any) -> None:
    """Stop a DataLoader iterator's worker processes now. After an error, the traceback keeps
    the iterator alive (a notebook keeps the last one indefinitely), and with it every worker
    process and its memory."""
    shutdown = getattr(it, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is not None:
        shutdown()


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error={on_error!r}; use 'raise' or 'skip'.")


class _FileDataset(Dataset):
    """Shared reading, preprocessing and error policy for file-backed datasets."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, pathologies: list[str],
                 size: int, mode: str, equalize: bool, on_error: OnError,
                 apply_voi: bool) -> None:
        _check_on_error(on_error)
        self.size, self.mode, self.equalize = int(size), mode, equalize
        self.on_error, self.apply_voi = on_error, apply_voi
        self.pathologies = list(pathologies)
        self.skipped: list[tuple[str, str]] = []
        keep = []
        for i, p in enumerate(paths):
            reason = None
            if not p.exists():
                reason = "file does not exist"
            elif p.stat().st_size == 0:
                reason = "file is empty (0 bytes)"
            if reason is None:
                keep.append(i)
            elif on_error == "raise":
                raise DataError(f"{p}: {reason}. Fix the manifest/folder or pass on_error='skip'.")
            else:
                self.skipped.append((str(p), reason))
        self.paths = [paths[i] for i in keep]
        self.labels = labels[keep].astype(np.float32) if len(labels) else labels
        if self.skipped:
            warnings.warn(f"{type(self).__name__}: skipped {len(self.skipped)} missing/empty "
                          f"file(s), e.g. {self.skipped[0][0]}", UserWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, idx: int) -> np.ndarray:
        """Decoded and preprocessed image ``idx`` (float32 [S, S] in [0, 1])."""
        p = self.paths[idx]
        img = load_image(p, apply_voi=self.apply_voi, max_side=4 * self.size)
        return preprocess(img, self.size, self.mode, self.equalize, name=str(p))

    def _item(self, idx: int, img: np.ndarray) -> dict[str, Any]:
        return {"img": to_tensor(img), "lab": torch.from_numpy(self.labels[idx].copy()),
                "idx": idx, "path": str(self.paths[idx])}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        n = len(self.paths)
        if not -n <= idx < n:
            raise IndexError(f"{type(self).__name__} index {idx} out of range for length {n}")
        idx %= n
        for attempt in range(n):
            j = (idx + attempt) % n
            try:
                item = self._item(j, self.load(j))
                item["n_skipped"] = attempt
                return item
            except Exception as e:
                err = e if isinstance(e, DataError) else DataError(
                    f"{self.paths[j]}: {type(e).__name__}: {e}")
                if self.on_error == "raise":
                    if err is e:
                        raise
                    raise err from e
                self._skip(str(self.paths[j]), str(err))
                warnings.warn(f"skipping {err}", UserWarning, stacklevel=2)
        raise DataError(f"{type(self).__name__}: every one of the {n} files failed to load; "
                        f"first error: {self.skipped[0][1] if self.skipped else '?'}")

    def _skip(self, path: str, reason: str) -> None:
        """Record a bad file once, however often it is met (retries of neighbouring items,
        epochs, ``scan``), so ``skip_report`` counts files, not encounters."""
        if all(path != p for p, _ in self.skipped):
            self.skipped.append((path, reason))

    def scan(self) -> dict[str, Any]:
        """Decode every file now; with on_error='skip' drop the bad ones. Returns the counts."""
        good = []
        for i, p in enumerate(self.paths):
            try:
                self.load(i)
                good.append(i)
            except DataError as e:
                if self.on_error == "raise":
                    raise
                self._skip(str(p), str(e))
        self.paths = [self.paths[i] for i in good]
        self.labels = self.labels[good]
        return self.skip_report()

    def skip_report(self) -> dict[str, Any]:
        """Counts of what was skipped in THIS process, by reason."""
        reasons = Counter(r.split(": ", 1)[-1].split(" (")[0][:80] for _, r in self.skipped)
        return {"n_items": len(self.paths), "n_skipped": len(self.skipped),
                "reasons": dict(reasons)}


class FolderDataset(_FileDataset):
    """Every radiograph under ``root`` (recursive; DICOM and PNG/JPEG/TIFF mixed; unlabelled).

    A file is taken when its suffix is an image/DICOM suffix, or when it has no suffix and
    carries the DICOM magic (PACS exports often have names like ``IM0001``).
    """

    def __init__(self, root: str | Path, size: int = 128, mode: str = "pad",
                 equalize: bool = False, on_error: OnError = "raise",
                 apply_voi: bool = True) -> None:
        from radjepa_lab.data.dicom import is_dicom

        root = Path(root)
        if not root.exists():
            raise DataError(f"{root}: folder does not exist. Check the path (cwd is {Path.cwd()}).")
        if not root.is_dir():
            raise DataError(f"{root}: is a file, not a folder; use load_image() for one file.")
        suffixes = set(IMAGE_SUFFIXES) | set(DICOM_SUFFIXES)
        paths = sorted(
            p for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
            and (p.suffix.lower() in suffixes or (p.suffix == "" and is_dicom(p)))
        )
        if not paths:
            raise DataError(f"{root}: no radiographs found (searched recursively for "
                            f"{sorted(suffixes)} and suffix-less DICOM files).")
        self.root = root
        super().__init__(paths, np.zeros((len(paths), 0), np.float32), [], size, mode, equalize,
                         on_error, apply_voi)


_LABEL_VALUES = {"0": 0.0, "1": 1.0, "-1": -1.0, "0.0": 0.0, "1.0": 1.0, "-1.0": -1.0,
                 "": math.nan, "nan": math.nan, "NaN": math.nan, "NA": math.nan}


def _parse_label(value: str) -> float | None:
    return _LABEL_VALUES.get(value.strip())


class CSVDataset(_FileDataset):
    """Images listed in a CSV manifest: one path column plus label columns.

    Labels must be 0, 1, -1 (uncertain) or empty/NaN (unknown); anything else raises
    :class:`ManifestError` naming the column, the line and the value. ``uncertain`` maps -1 to
    NaN (default, "don't train on it"), 0 or 1. Relative paths are resolved against ``root``
    (default: the CSV's folder). ``label_cols=None`` takes every column whose values are all
    valid labels. Lines starting with ``#`` are comments.
    """

    def __init__(self, csv_path: str | Path, path_col: str = "path",
                 label_cols: Sequence[str] | None = None, size: int = 128,
                 uncertain: Literal["nan", "zero", "one"] = "nan", root: str | Path | None = None,
                 mode: str = "pad", equalize: bool = False, on_error: OnError = "raise",
                 apply_voi: bool = True) -> None:
        csv_path = Path(csv_path)
        if not csv_path.exists():
            raise ManifestError(f"{csv_path}: manifest does not exist.")
        if uncertain not in ("nan", "zero", "one"):
            raise ManifestError(f"{csv_path}: uncertain={uncertain!r}; use 'nan', 'zero' or 'one'.")
        with open(csv_path, newline="") as f:
            lines = [(n, line) for n, line in enumerate(f, start=1)
                     if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            raise ManifestError(f"{csv_path}: manifest is empty (no header row).")
        reader = csv.reader([line for _, line in lines])
        header = [h.strip() for h in next(reader)]
        rows = list(reader)
        line_no = [n for n, _ in lines[1:]]
        if path_col not in header:
            raise ManifestError(f"{csv_path}: path column {path_col!r} is missing; columns are "
                                f"{header}. Pass path_col=...")
        if label_cols is None:
            label_cols = [h for k, h in enumerate(header) if h != path_col and rows and all(
                k < len(r) and _parse_label(r[k]) is not None for r in rows)]
        missing = [c for c in label_cols if c not in header]
        if missing:
            raise ManifestError(f"{csv_path}: label column(s) {missing} missing; columns are "
                                f"{header}.")
        if not rows:
            raise ManifestError(f"{csv_path}: manifest has a header but no rows.")
        pi = header.index(path_col)
        li = [header.index(c) for c in label_cols]
        labels = np.full((len(rows), len(li)), np.nan, np.float32)
        for r, (row, n) in enumerate(zip(rows, line_no, strict=True)):
            if len(row) != len(header):
                raise ManifestError(f"{csv_path}: line {n} has {len(row)} fields, header has "
                                    f"{len(header)}.")
            for c, k in enumerate(li):
                val = _parse_label(row[k])
                if val is None:
                    raise ManifestError(
                        f"{csv_path}: column {header[k]!r}, line {n}: label {row[k]!r} is not one "
                        "of 0, 1, -1 (uncertain) or empty/NaN (unknown).")
                labels[r, c] = val
        fill = {"nan": np.nan, "zero": 0.0, "one": 1.0}[uncertain]
        labels[labels == -1.0] = fill
        base = Path(root) if root is not None else csv_path.parent
        paths = [Path(row[pi]) if Path(row[pi]).is_absolute() else base / row[pi] for row in rows]
        self.csv_path = csv_path
        super().__init__(paths, labels, list(label_cols), size, mode, equalize, on_error,
                         apply_voi)


class XRVAdapter(Dataset):
    """Wrap any torchxrayvision dataset (NIH, CheXpert, MIMIC, RSNA, VinDr, PadChest...).

    torchxrayvision yields images in [-1024, 1024] (``xrv.datasets.normalize``); the adapter
    maps them to the kit's [0, 1], checks the range (a dataset built without that
    normalisation raises a DataError saying so), and resizes with :func:`preprocess`. Its
    loaders are reused, not rewritten: ``.pathologies`` and ``.labels`` are the wrapped
    dataset's.
    """

    def __init__(self, xrv_dataset: Any, size: int = 128, mode: str = "pad",
                 equalize: bool = False, on_error: OnError = "raise") -> None:
        _check_on_error(on_error)
        self.ds, self.size, self.mode, self.equalize = xrv_dataset, int(size), mode, equalize
        self.on_error = on_error
        self.pathologies = list(getattr(xrv_dataset, "pathologies", []))
        self.labels = np.asarray(getattr(xrv_dataset, "labels",
                                         np.zeros((len(xrv_dataset), 0))), np.float32)
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.ds)

    def _name(self, idx: int) -> str:
        csv_ = getattr(self.ds, "csv", None)
        for col in ("Image Index", "Path", "path", "imgid", "ImageID", "dicom_id", "image_id"):
            try:
                return f"{type(self.ds).__name__}[{idx}] ({csv_.iloc[idx][col]})"
            except Exception:
                continue
        return f"{type(self.ds).__name__}[{idx}]"

    def _load(self, idx: int) -> dict[str, Any]:
        name = self._name(idx)
        try:
            sample = self.ds[idx]
        except Exception as e:
            raise DataError(f"{name}: torchxrayvision could not load it "
                            f"({type(e).__name__}: {e}).") from e
        img = np.asarray(sample["img"], dtype=np.float32)
        if img.ndim == 3:
            img = img[0]
        lo, hi = float(img.min()), float(img.max())
        # xrv maps [0, 255] to [-1024, 1024], so any radiograph has negative values; an
        # image with none was not normalised (or is in another range altogether)
        if lo < -1024.5 or hi > 1024.5 or (lo >= 0.0 and hi > lo):
            raise DataError(f"{name}: image range [{lo:g}, {hi:g}] is not torchxrayvision's "
                            "[-1024, 1024]; build the dataset with xrv's normalize step "
                            "(xrv.datasets.normalize(img, maxval)).")
        unit = (img + 1024.0) / 2048.0
        check_unit_range(unit, name)
        out = preprocess(np.clip(unit, 0.0, 1.0), self.size, self.mode, self.equalize, name=name)
        lab = np.asarray(sample.get("lab", self.labels[idx]), dtype=np.float32)
        return {"img": to_tensor(out), "lab": torch.from_numpy(lab.copy()), "idx": int(idx),
                "path": name}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        n = len(self.ds)
        for attempt in range(n):
            j = (idx + attempt) % n
            try:
                item = self._load(j)
                item["n_skipped"] = attempt
                return item
            except DataError as e:
                if self.on_error == "raise":
                    raise
                self.skipped.append((self._name(j), str(e)))
                warnings.warn(f"skipping {e}", UserWarning, stacklevel=2)
        raise DataError(f"XRVAdapter: every one of the {n} items failed to load.")

    def skip_report(self) -> dict[str, Any]:
        return {"n_items": len(self), "n_skipped": len(self.skipped)}


class XRVStandIn:
    """A stand-in with torchxrayvision's dataset interface, for the demo when xrv is absent.

    torchxrayvision datasets yield ``{"img": float [1, H, W] in [-1024, 1024], "lab": ...}``
    and expose ``.pathologies`` and ``.labels``; this wraps [0, 1] images the same way.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, pathologies: list[str]) -> None:
        self.images = np.asarray(images, np.float32)
        self.labels = np.asarray(labels, np.float32)
        self.pathologies = list(pathologies)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        img = self.images[idx][None] * 2048.0 - 1024.0  # xrv.datasets.normalize's range
        return {"img": img, "lab": self.labels[idx], "idx": idx}


class ArrayDataset(torch.utils.data.Dataset):
    """Wrap in-memory images ``[N, H, W]`` in [0, 1] (and labels) as kit-style dict items.

    Handy for phantoms from ``generate_batch`` and for tests; ``fingerprint()`` hashes the
    bytes, so the embedding cache knows when the data changed.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        pathologies: Sequence[str] | None = None,
    ) -> None:
        self.images = np.asarray(images, dtype=np.float32)
        if self.images.ndim != 3:
            raise DataError(f"ArrayDataset: images must be [N, H, W], got {self.images.shape}")
        n = len(self.images)
        self.labels = (
            np.zeros((n, 0), np.float32) if labels is None else np.asarray(labels, np.float32)
        )
        self.pathologies = list(pathologies or [f"label_{i}" for i in range(self.labels.shape[1])])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "img": torch.from_numpy(self.images[i][None]),
            "lab": torch.from_numpy(self.labels[i]),
            "idx": i,
        }

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.images.tobytes())
        h.update(self.labels.tobytes())
        return h.hexdigest()


def phantom_count(spec: str) -> int | None:
    """N of a ``phantoms:N`` / ``phantoms[:N]`` data spec (None for plain ``phantoms``).

    N is always the total number of phantoms the command uses (``probe`` splits them 75/25
    into probe-train and test). DataError when N is not a positive integer.
    """
    rest = str(spec)[len("phantoms"):].strip("[]:")
    if not rest:
        return None
    try:
        n = int(rest)
    except ValueError:
        n = 0
    if n < 1:
        raise DataError(f"--data {spec!r}: use 'phantoms' or 'phantoms:N' (N a positive integer)")
    return n


def resolve_dataset(spec: str, size: int, seed: int = 0, n: int = 512,
                    phantom_size: int | None = None, where: str = "--data") -> Dataset:
    """The one resolver of a data spec: ``phantoms[:N]``, a folder of images, or a CSV manifest.

    ``phantoms`` makes ``n`` SYNTHETIC phantoms (``phantoms:N`` makes N) lazily from ``seed``,
    drawn at ``phantom_size`` (default ``size``). A folder is read recursively; a ``.csv`` file
    is a manifest with a ``path`` column and label columns.
    """
    s = str(spec)
    if s.startswith("phantoms"):
        from radjepa_lab.data.phantom import PhantomConfig, PhantomDataset

        count = phantom_count(s) or n
        if count < 1:
            raise DataError(f"{where}={spec!r}: need at least one phantom (n={count}).")
        return PhantomDataset(count, seed=seed, cfg=PhantomConfig(size=phantom_size or size))
    path = Path(s)
    if not path.exists():
        raise DataError(f"{where}={spec!r}: no such file or folder; use 'phantoms[:N]', a "
                        "folder of images, or a CSV manifest")
    if path.is_dir():
        return FolderDataset(path, size=size)
    try:
        return CSVDataset(path, size=size)
    except TypeError as e:
        raise DataError(
            f"{where}={spec!r}: a CSV manifest needs its path and label columns; build a "
            f"radjepa_lab.data.datasets.CSVDataset in Python ({e})"
        ) from e
