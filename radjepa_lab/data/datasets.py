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
import json
import math
import os
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

    def fingerprint(self) -> str:
        """Every file's path, size and modification time (ns), the labels and the
        preprocessing: editing, adding or removing any one image changes it (the embedding
        cache's key), without reading a single pixel."""
        h = hashlib.sha256(json.dumps([type(self).__qualname__, self.size, self.mode,
                                       self.equalize, self.apply_voi, self.on_error,
                                       self.pathologies]).encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        for p in self.paths:
            try:
                st = p.stat()
                h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{os.path.abspath(p)}|missing\n".encode())
        return h.hexdigest()

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


def _walk(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every file under ``root`` (following folder links once each) and every folder that
    could not be listed, as ``(folder, reason)``: ``Path.rglob`` skips those silently."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()

    def onerror(e: OSError) -> None:
        problems.append((str(e.filename or root), e.strerror or str(e)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        files += [Path(dirpath) / f for f in filenames]
    return sorted(files), problems


class FolderDataset(_FileDataset):
    """Every radiograph under ``root`` (recursive; DICOM and PNG/JPEG/TIFF mixed; unlabelled).

    A file is taken when its suffix is an image/DICOM suffix, or when it has no suffix and
    carries the DICOM magic (PACS exports often have names like ``IM0001``). DICOMDIR files
    (media directory indexes) are left out. A subfolder that cannot be listed (permissions)
    follows ``on_error``: ``"raise"`` names it in a DataError, ``"skip"`` warns and records it
    in ``.skipped`` like a bad file.
    """

    def __init__(self, root: str | Path, size: int = 128, mode: str = "pad",
                 equalize: bool = False, on_error: OnError = "raise",
                 apply_voi: bool = True) -> None:
        from radjepa_lab.data.dicom import is_dicom, is_dicomdir

        _check_on_error(on_error)
        root = Path(root)
        if not root.exists():
            raise DataError(f"{root}: folder does not exist. Check the path (cwd is {Path.cwd()}).")
        if not root.is_dir():
            raise DataError(f"{root}: is a file, not a folder; use load_image() for one file.")
        suffixes = set(IMAGE_SUFFIXES) | set(DICOM_SUFFIXES)
        files, unlisted = _walk(root)
        if unlisted and on_error == "raise":
            folder, reason = unlisted[0]
            raise DataError(f"{folder}: cannot list this folder ({reason}), so its images would "
                            "be missed. Fix its permissions (chmod +rx) or pass on_error='skip' "
                            "to leave it out.")
        paths = [
            p for p in files
            if not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
            and (p.suffix.lower() in suffixes
                 or (p.suffix == "" and is_dicom(p) and not is_dicomdir(p)))
        ]
        if not paths:
            raise DataError(f"{root}: no radiographs found (searched recursively for "
                            f"{sorted(suffixes)} and suffix-less DICOM files).")
        self.root = root
        super().__init__(paths, np.zeros((len(paths), 0), np.float32), [], size, mode, equalize,
                         on_error, apply_voi)
        for folder, reason in unlisted:
            self.skipped.append((folder, f"{folder}: cannot list this folder ({reason})"))
            warnings.warn(f"FolderDataset: skipped the folder {folder}: cannot list it "
                          f"({reason})", UserWarning, stacklevel=2)


_LABEL_VALUES = {"0": 0.0, "1": 1.0, "-1": -1.0, "0.0": 0.0, "1.0": 1.0, "-1.0": -1.0,
                 "": math.nan, "nan": math.nan, "NaN": math.nan, "NA": math.nan}
# Spellings that are clearly meant as labels but are not the kit's: refused with a hint, never
# read as metadata (which would drop the column from the labels without a word).
_LABEL_WORDS = {"yes", "no", "y", "n", "true", "false", "t", "f", "positive", "negative",
                "pos", "neg", "present", "absent"}
_LABEL_RULE = "is not one of 0, 1, -1 (uncertain) or empty/NaN (unknown)"


def _parse_label(value: str) -> float | None:
    return _LABEL_VALUES.get(value.strip())


def _is_label_column(name: str, values: list[tuple[int, str]], csv_path: Path) -> bool:
    """Whether a column (``[(line, value)]``) holds labels, for ``label_cols=None``: all values
    are labels -> yes; a yes/no/true/false spelling, or a column whose values are mostly labels
    with a stray one (a typo) -> ManifestError naming the first unreadable value; other text or
    numbers -> metadata."""
    bad = [(n, v) for n, v in values if _parse_label(v) is None]
    if not bad:
        return True
    known = sum(1 for _, v in values if _parse_label(v) is not None and v.strip())
    words = [(n, v) for n, v in bad if v.strip().lower() in _LABEL_WORDS]
    if words or known > len(bad):  # mostly labels: the rest are typos, not metadata
        n, v = (words or bad)[0]
        raise ManifestError(f"{csv_path}: column {name!r}, line {n}: label {v!r} {_LABEL_RULE}. "
                            f"{_label_hint(v)}")
    return False


def _label_hint(value: str) -> str:
    if value.strip().lower() in _LABEL_WORDS:
        return "Write yes/true/positive as 1 and no/false/negative as 0."
    return "Fix the value, or leave the cell empty for unknown."


class CSVDataset(_FileDataset):
    """Images listed in a CSV manifest: one path column plus label columns.

    Labels must be 0, 1, -1 (uncertain) or empty/NaN/NA (unknown); nothing else is read as a
    label: ``yes``/``no``, ``true``/``false`` and typos raise :class:`ManifestError` naming the
    file, the column, the line and the value. ``uncertain`` maps -1 to NaN (default, "don't
    train on it"), 0 or 1. Relative paths are resolved against ``root`` (default: the CSV's
    folder). ``label_cols=None`` takes every column whose values are all labels; a column of
    other text or numbers (age, a seed, a report) is metadata, listed in ``.metadata_columns``;
    a column that looks like labels but holds an unreadable value raises. ``label_cols=[]``
    reads no labels (pretraining). The file is UTF-8 (a byte-order mark is fine); lines
    starting with ``#`` are comments.
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
        header, rows, line_no = _read_csv(csv_path)
        if path_col not in header:
            raise ManifestError(f"{csv_path}: path column {path_col!r} is missing; columns are "
                                f"{header}. Pass path_col=...")
        if not rows:
            raise ManifestError(f"{csv_path}: manifest has a header but no rows.")
        for row, n in zip(rows, line_no, strict=True):
            if len(row) != len(header):
                raise ManifestError(f"{csv_path}: line {n} has {len(row)} fields, header has "
                                    f"{len(header)}.")
        pi = header.index(path_col)
        if label_cols is None:
            label_cols = [h for k, h in enumerate(header) if k != pi and _is_label_column(
                h, [(n, r[k]) for r, n in zip(rows, line_no, strict=True)], csv_path)]
        missing = [c for c in label_cols if c not in header]
        if missing:
            raise ManifestError(f"{csv_path}: label column(s) {missing} missing; columns are "
                                f"{header}.")
        li = [header.index(c) for c in label_cols]
        labels = np.full((len(rows), len(li)), np.nan, np.float32)
        for r, (row, n) in enumerate(zip(rows, line_no, strict=True)):
            if not row[pi].strip():
                raise ManifestError(f"{csv_path}: line {n}: the {path_col!r} cell is empty.")
            for c, k in enumerate(li):
                val = _parse_label(row[k])
                if val is None:
                    raise ManifestError(
                        f"{csv_path}: column {header[k]!r}, line {n}: label {row[k]!r} "
                        f"{_LABEL_RULE}. {_label_hint(row[k])}")
                labels[r, c] = val
        fill = {"nan": np.nan, "zero": 0.0, "one": 1.0}[uncertain]
        labels[labels == -1.0] = fill
        base = Path(root) if root is not None else csv_path.parent
        paths = [Path(row[pi]) if Path(row[pi]).is_absolute() else base / row[pi] for row in rows]
        self.csv_path = csv_path
        self.metadata_columns = [h for k, h in enumerate(header) if k != pi and h not in label_cols]
        super().__init__(paths, labels, list(label_cols), size, mode, equalize, on_error,
                         apply_voi)


def _read_csv(csv_path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, file line of each row) of a UTF-8 manifest; ManifestError naming the file
    for an encoding or CSV-syntax problem, an empty file or repeated column names."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            lines = [(n, line) for n, line in enumerate(f, start=1)
                     if line.strip() and not line.lstrip().startswith("#")]
    except UnicodeDecodeError as e:
        raise ManifestError(f"{csv_path}: not UTF-8 text ({e.reason} at byte {e.start}); save "
                            "the manifest as UTF-8 (in Excel: 'CSV UTF-8').") from e
    except OSError as e:
        raise ManifestError(f"{csv_path}: cannot be read ({e.strerror or e}).") from e
    if not lines:
        raise ManifestError(f"{csv_path}: manifest is empty (no header row).")
    nul = next((n for n, line in lines if "\x00" in line), None)
    if nul is not None:
        raise ManifestError(f"{csv_path}: line {nul} contains NUL bytes; the file is binary or "
                            "UTF-16, not a UTF-8 CSV. Save it as UTF-8 CSV.")
    reader = csv.reader(line for _, line in lines)
    parsed, first_line, used = [], [], 0
    try:
        for row in reader:  # a quoted cell may span lines: number each row by its first line
            parsed.append(row)
            first_line.append(lines[used][0])
            used = reader.line_num
    except csv.Error as e:
        raise ManifestError(f"{csv_path}: line {lines[used][0]}: not readable as CSV ({e}).") \
            from e
    header = [h.strip() for h in parsed[0]]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ManifestError(f"{csv_path}: column name(s) {dup} appear more than once in the "
                            "header; rename them.")
    return header, parsed[1:], first_line[1:]


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
                    phantom_size: int | None = None, where: str = "--data",
                    labels: bool = True) -> Dataset:
    """The one resolver of a data spec: ``phantoms[:N]``, a folder of images, or a CSV manifest.

    ``phantoms`` makes ``n`` SYNTHETIC phantoms (``phantoms:N`` makes N) lazily from ``seed``,
    drawn at ``phantom_size`` (default ``size``). A folder is read recursively; a ``.csv`` file
    is a manifest with a ``path`` column and label columns (``labels=False``, for pretraining:
    only the path column is read, so a manifest without label columns is fine).
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
    return CSVDataset(path, size=size, label_cols=None if labels else [])
