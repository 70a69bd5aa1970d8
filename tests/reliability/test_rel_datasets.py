"""Datasets that must not mislead: manifests whose labels cannot be read (corpus.MANIFEST_CASES),
duplicate images on both sides of a probe split, folders that cannot be listed, DICOMDIR files
taken as images, a CSV manifest for pretraining, and an embedding cache that could return
stale features after one image changed."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import MANIFEST_CASES, dicomdir_dataset, valid_dicom
from helpers import write_png

from radjepa_lab.analysis.embed import extract_features
from radjepa_lab.analysis.evaluation import dataset_eval_data
from radjepa_lab.cli import main
from radjepa_lab.data.datasets import CSVDataset, FolderDataset
from radjepa_lab.errors import DataError, ManifestError


def _image(path: Path, value: int, size: int = 16) -> Path:
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 256, (size, size), dtype=np.uint8)
    return write_png(path, arr)


@pytest.mark.parametrize("name, content, cols, error, labels", MANIFEST_CASES,
                         ids=[c[0] for c in MANIFEST_CASES])
def test_manifest_case(tmp_path: Path, name: str, content: str | bytes, cols: list | None,
                       error: str | None, labels: list[str]) -> None:
    _image(tmp_path / "a.png", 1)
    _image(tmp_path / "b.png", 2)
    path = tmp_path / f"{name}.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    if error is None:
        ds = CSVDataset(path, label_cols=cols, size=16)
        assert ds.pathologies == labels and len(ds) >= 2
        assert ds[0]["img"].shape == (1, 16, 16)
        return
    with pytest.raises(ManifestError) as info:
        CSVDataset(path, label_cols=cols, size=16)
    msg = str(info.value)
    assert str(path) in msg and re.search(error, msg, re.S), msg


def test_metadata_columns_are_listed_not_dropped(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1)
    _image(tmp_path / "b.png", 2)
    m = tmp_path / "m.csv"
    m.write_text("path,effusion,age,report\na.png,1,45,left effusion\nb.png,0,0,normal\n")
    ds = CSVDataset(m, size=16)
    assert ds.pathologies == ["effusion"] and ds.metadata_columns == ["age", "report"]


# ----------------------------------------------------------------------------- duplicates


def test_duplicates_never_straddle_the_probe_split(tmp_path: Path) -> None:
    """12 distinct images; 6 also copied under another name (same bytes), 6 listed twice (same
    path): 24 rows, 12 duplicates. Every duplicate set lands on one side of the split."""
    rows = []
    for i in range(12):
        _image(tmp_path / f"img_{i}.png", i)
        rows.append(f"img_{i}.png,{i % 2}")
    for i in range(6):
        shutil.copy(tmp_path / f"img_{i}.png", tmp_path / f"copy_{i}.png")
        rows.append(f"copy_{i}.png,{i % 2}")
        rows.append(f"img_{i + 6}.png,{i % 2}")
    m = tmp_path / "m.csv"
    m.write_text("path,effusion\n" + "\n".join(rows) + "\n")
    ds = CSVDataset(m, size=16)
    with pytest.warns(UserWarning, match=r"12 of 24 images duplicate another"):
        data = dataset_eval_data(ds, size=16, test_fraction=0.25, seed=0)
    assert len(data.train_images) + len(data.test_images) == 24
    assert data.info["n_duplicates"] == 12
    train = {a.tobytes() for a in data.train_images}
    assert not [t for t in data.test_images if t.tobytes() in train]
    assert len(data.test_images) >= 6


def test_no_duplicates_no_warning_and_the_same_split_as_before(tmp_path: Path) -> None:
    from radjepa_lab.data.datasets import ArrayDataset

    imgs = np.random.default_rng(0).random((16, 8, 8)).astype(np.float32)
    ds = ArrayDataset(imgs, np.zeros((16, 1), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = dataset_eval_data(ds, size=8, seed=3)
    order = np.random.default_rng(3).permutation(16)
    np.testing.assert_array_equal(data.test_images, imgs[order[:4]])
    np.testing.assert_array_equal(data.train_images, imgs[order[4:]])


# ----------------------------------------------------------------------------- folders


def _unlistable(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000; as root (which ignores modes) listing it is made to fail the same way."""
    folder.chmod(0)
    if os.access(folder, os.R_OK | os.X_OK):
        real = os.scandir

        def scandir(path=".", *a, **k):  # noqa: ANN001 - mirrors os.scandir
            if Path(path) == folder:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *a, **k)

        monkeypatch.setattr(os, "scandir", scandir)


def test_an_unlistable_subfolder_raises_or_is_skipped_out_loud(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cxr"
    (root / "ok").mkdir(parents=True)
    (root / "locked").mkdir()
    _image(root / "ok" / "a.png", 1)
    _image(root / "locked" / "b.png", 2)
    _unlistable(root / "locked", monkeypatch)
    try:
        with pytest.raises(DataError, match=rf"{root / 'locked'}: cannot list this folder"):
            FolderDataset(root, size=16)
        with pytest.warns(UserWarning, match=r"skipped the folder .*locked"):
            ds = FolderDataset(root, size=16, on_error="skip")
        assert len(ds) == 1 and [p for p, _ in ds.skipped] == [str(root / "locked")]
        assert ds.skip_report()["n_skipped"] == 1
    finally:
        (root / "locked").chmod(0o755)


def test_dicomdir_files_are_not_taken_as_images(tmp_path: Path) -> None:
    root = tmp_path / "study"
    root.mkdir()
    valid_dicom(root / "IM0001")  # suffix-less image: taken
    _image(root / "a.png", 1)
    ds = dicomdir_dataset()
    ds.save_as(root / "DICOMDIR", enforce_file_format=True)
    ds.save_as(root / "INDEX", enforce_file_format=True)  # a DICOMDIR by content, not name
    folder = FolderDataset(root, size=16)
    assert sorted(p.name for p in folder.paths) == ["IM0001", "a.png"]
    assert all(folder[i]["img"].shape == (1, 16, 16) for i in range(len(folder)))


def test_pretraining_reads_a_csv_manifest_without_labels(tmp_path: Path) -> None:
    for i in range(8):
        _image(tmp_path / f"img_{i}.png", i, size=40)
    m = tmp_path / "train.csv"
    rows = "\n".join(f"img_{i}.png,{'yes' if i % 2 else 'no'},site {i}" for i in range(8))
    m.write_text("\ufeffpath,effusion,site\n" + rows + "\n", encoding="utf-8")  # BOM, word labels
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "smoke", "--data", str(m), "--out", str(out),
                 "--no-progress", "--steps", "2", "--set", "monitor_batch=8"]) == 0
    assert (out / "checkpoint.pt").exists()
    with pytest.raises(ManifestError, match="'no'"):  # read for probing, the labels must parse
        CSVDataset(m, size=16)


# ----------------------------------------------------------------------------- the feature cache


def test_changing_one_image_in_the_middle_of_a_folder_misses_the_cache(
        tmp_path: Path, tiny_encoder: torch.nn.Module) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(12):
        _image(root / f"img_{i:02d}.png", i, size=32)
    cache = tmp_path / "cache"
    kw = dict(cache_dir=cache, progress=False, device="cpu", batch_size=4)
    first = extract_features(tiny_encoder, FolderDataset(root, size=32), **kw)
    again = extract_features(tiny_encoder, FolderDataset(root, size=32), **kw)
    assert again.info["cache_hit"] and np.array_equal(again.pooled, first.pooled)
    _image(root / "img_03.png", 99, size=32)  # not the first, middle or last item
    changed = extract_features(tiny_encoder, FolderDataset(root, size=32), **kw)
    assert not changed.info["cache_hit"]
    diff = np.abs(changed.pooled - first.pooled).max(axis=1)
    assert diff[3] > 0 and np.all(np.delete(diff, 3) == 0)


def test_any_dataset_is_keyed_on_every_item(tmp_path: Path,
                                            tiny_encoder: torch.nn.Module) -> None:
    from radjepa_lab.data.phantom import PhantomConfig, PhantomDataset

    class Items(torch.utils.data.Dataset):  # no fingerprint(): hashed item by item
        def __init__(self, imgs: torch.Tensor) -> None:
            self.imgs = imgs

        def __len__(self) -> int:
            return len(self.imgs)

        def __getitem__(self, i: int) -> dict:
            return {"img": self.imgs[i], "lab": torch.zeros(1)}

    imgs = torch.rand(9, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(cache_dir=tmp_path, progress=False, device="cpu")
    extract_features(tiny_encoder, Items(imgs), **kw)
    assert extract_features(tiny_encoder, Items(imgs.clone()), **kw).info["cache_hit"]
    imgs[2, 0, 5, 5] += 0.01
    assert not extract_features(tiny_encoder, Items(imgs), **kw).info["cache_hit"]

    ph = PhantomDataset(6, seed=1, cfg=PhantomConfig(size=32))
    extract_features(tiny_encoder, ph, **kw)
    assert extract_features(tiny_encoder, PhantomDataset(6, seed=1, cfg=PhantomConfig(size=32)),
                            **kw).info["cache_hit"]
    other = PhantomDataset(6, seed=1, cfg=PhantomConfig(size=32, noise=0.5))
    assert not extract_features(tiny_encoder, other, **kw).info["cache_hit"]
