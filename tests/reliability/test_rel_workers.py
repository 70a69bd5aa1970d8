"""DataLoader workers (num_workers=2): a bad file is reported with its name, in the main
process, promptly; no hang, no silently dead worker, no orphaned worker processes."""

from __future__ import annotations

import gc
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import pixel_data_offset, valid_dicom
from guards import time_limit
from torch.utils.data import DataLoader

from radjepa_lab.config import with_steps
from radjepa_lab.data.datasets import FolderDataset
from radjepa_lab.errors import DataError
from radjepa_lab.presets import get_preset
from radjepa_lab.train import pretrain

LIMIT_S = 90  # generous for a loaded 2-core box; a hang would never end


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Path]:
    """8 good DICOM/PNG files and one DICOM truncated inside its pixel data."""
    from PIL import Image

    root = tmp_path / "cxr"
    root.mkdir()
    for i in range(4):
        valid_dicom(root / f"a_{i}.dcm")
        Image.fromarray(np.full((24, 24), 30 * i + 20, np.uint8)).save(root / f"b_{i}.png")
    raw = (root / "a_0.dcm").read_bytes()
    bad = root / "a_2_truncated.dcm"
    bad.write_bytes(raw[: pixel_data_offset(raw) + 40])
    return root, bad


def _no_orphans() -> None:
    gc.collect()
    left = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert left == [], f"worker processes left running: {left}"


def test_worker_error_names_the_file_and_workers_are_reaped(folder: tuple[Path, Path]) -> None:
    root, bad = folder
    ds = FolderDataset(root, size=16)
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    with time_limit(LIMIT_S, "DataLoader with a bad file"), pytest.raises(DataError) as info:
        for _ in loader:
            pass
    assert str(bad) in str(info.value) and "truncated" in str(info.value)
    del loader, info
    _no_orphans()


def test_worker_skip_mode_delivers_every_good_file(folder: tuple[Path, Path]) -> None:
    root, bad = folder
    ds = FolderDataset(root, size=16, on_error="skip")
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    paths, skipped = [], 0
    with time_limit(LIMIT_S, "DataLoader in skip mode"):
        for batch in loader:
            paths += batch["path"]
            skipped += int(batch["n_skipped"].sum())
    assert str(bad) not in paths
    good = {str(p) for p in root.iterdir() if p != bad}
    assert set(paths) == good  # every good file arrives (the bad slot is refilled by its successor)
    assert skipped >= 1  # the skip is reported through the items, across processes
    report = ds.scan()  # and in the calling process, with the reason
    assert report["n_skipped"] == 1 and ds.skipped[0][0] == str(bad)
    _no_orphans()


@pytest.mark.parametrize("cache_data", [False, True])
def test_pretraining_with_workers_reports_the_bad_file(folder: tuple[Path, Path], tmp_path: Path,
                                                       cache_data: bool) -> None:
    root, bad = folder
    cfg = get_preset("smoke")
    cfg.batch_size, cfg.monitor_batch = 4, 4
    with_steps(cfg, 4)  # caps the warmup (pretrain checks the config)
    cfg.num_workers, cfg.cache_data = 2, cache_data
    with time_limit(LIMIT_S, "pretrain with workers"), pytest.raises(DataError) as info:
        pretrain(cfg, tmp_path / "run", dataset=FolderDataset(root, size=32), progress=False)
    assert str(bad) in str(info.value)
    _no_orphans()


class _DiesInWorker(torch.utils.data.Dataset):
    """Item 5 kills its worker process outright (as a segfaulting decoder would)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        if i == 5 and torch.utils.data.get_worker_info() is not None:
            os._exit(3)
        return {"img": torch.full((1, 32, 32), 0.5)}


def test_a_worker_that_dies_hard_stops_training_loudly(tmp_path: Path) -> None:
    cfg = get_preset("smoke")
    cfg.steps, cfg.batch_size, cfg.monitor_batch = 6, 4, 4
    cfg.num_workers, cfg.cache_data = 2, False
    with time_limit(LIMIT_S, "pretrain with a dying worker"), pytest.raises(
            RuntimeError, match=r"(?i)worker.*exited unexpectedly"):
        pretrain(cfg, tmp_path / "run", dataset=_DiesInWorker(), progress=False)
    _no_orphans()
