"""Folder / CSV-manifest datasets, the torchxrayvision adapter and stand-in, the on_error
policy, and the one resolver of ``--data`` specs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from helpers import write_png

from radjepa_lab.data.datasets import (
    CSVDataset,
    FolderDataset,
    XRVAdapter,
    XRVStandIn,
    resolve_dataset,
)
from radjepa_lab.data.dicom import write_dicom
from radjepa_lab.data.phantom import (
    FINDINGS,
    PhantomConfig,
    PhantomDataset,
    derive_seed,
    generate_batch,
    generate_phantom,
)
from radjepa_lab.data.phantom import write_phantoms as write_sample
from radjepa_lab.errors import DataError, ManifestError


@pytest.fixture()
def mixed_folder(tmp_path):
    root = tmp_path / "cxr"
    (root / "a" / "b").mkdir(parents=True)
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48 x 64, landscape
    write_png(root / "one.png", ramp)
    write_png(root / "a" / "two.jpg", ramp)  # PNG bytes in a .jpg name: content decides
    write_dicom(root / "a" / "three.dcm", ramp.astype(np.uint16) * 16, bits_stored=12)
    write_dicom(root / "a" / "b" / "IM0001", ramp, bits_allocated=8, photometric="MONOCHROME1")
    (root / "a" / "notes.txt").write_text("not an image")
    return root


def test_folder_dataset_is_recursive_and_mixed(mixed_folder):
    ds = FolderDataset(mixed_folder, size=32)
    names = [p.name for p in ds.paths]
    assert names == ["IM0001", "three.dcm", "two.jpg", "one.png"]  # sorted by full path
    for i in range(len(ds)):
        item = ds[i]
        assert item["img"].shape == (1, 32, 32) and item["img"].dtype == torch.float32
        assert 0.0 <= item["img"].min() and item["img"].max() <= 1.0
        assert item["lab"].shape == (0,) and item["path"].endswith(names[i])
    # landscape 48x64 padded: top and bottom rows are air
    assert ds[3]["img"][0, 0].max() == 0 and ds[3]["img"][0, 16].max() > 0.5
    # MONOCHROME1 copy of the ramp comes back inverted (air dark)
    row_mono1, row_png = ds[0]["img"][0, 16], ds[3]["img"][0, 16]
    assert row_png[4] < row_png[28] and row_mono1[4] > row_mono1[28]


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty.*no radiographs"):
        FolderDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="nope.*does not exist"):
        FolderDataset(tmp_path / "nope")


def test_corrupt_file_raise_and_skip(mixed_folder):
    (mixed_folder / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    ds = FolderDataset(mixed_folder, size=16)
    bad = [i for i, p in enumerate(ds.paths) if p.name == "bad.png"][0]
    with pytest.raises(DataError, match=r"bad\.png"):
        ds[bad]
    ds = FolderDataset(mixed_folder, size=16, on_error="skip")
    with pytest.warns(UserWarning, match=r"bad\.png"):
        item = ds[bad]
    assert item["n_skipped"] == 1 and not item["path"].endswith("bad.png")
    assert ds.skipped[0][0].endswith("bad.png")
    ds2 = FolderDataset(mixed_folder, size=16, on_error="skip")
    report = ds2.scan()
    assert report["n_items"] == 4 and report["n_skipped"] == 1
    assert all(not p.name.startswith("bad") for p in ds2.paths)


def test_worker_errors_reach_the_main_process_with_the_file_name(mixed_folder):
    (mixed_folder / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"zero\.png.*empty"):
        FolderDataset(mixed_folder, size=16)  # found when the dataset is built
    (mixed_folder / "zero.png").write_bytes(b"garbage")
    loader = torch.utils.data.DataLoader(FolderDataset(mixed_folder, size=16), batch_size=5,
                                         num_workers=1)
    with pytest.raises(DataError, match=r"zero\.png"):
        next(iter(loader))


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    return write_sample(6, 32, tmp_path_factory.mktemp("ph"), seed=4)


def test_csv_dataset_reads_the_phantom_sample(sample_dir):
    ds = CSVDataset(sample_dir / "labels.csv", size=32)
    assert ds.pathologies == list(FINDINGS)  # ctr/seed/synthetic are not label columns
    p = generate_phantom(derive_seed(4, 2), PhantomConfig(size=32))
    np.testing.assert_array_equal(ds.labels[2], p.label_vector())
    item = ds[2]
    assert torch.allclose(item["img"][0], torch.from_numpy(p.image), atol=0.5 / 255 + 1e-6)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    assert next(iter(loader))["lab"].shape == (3, len(FINDINGS))


def manifest(tmp_path, body: str, png: bool = True):
    if png:
        write_png(tmp_path / "x.png", np.full((8, 8), 128, np.uint8))
    path = tmp_path / "m.csv"
    path.write_text(body)
    return path


@pytest.mark.parametrize("policy,expected", [("nan", math.nan), ("zero", 0.0), ("one", 1.0)])
def test_csv_uncertain_policy_and_unknowns(tmp_path, policy, expected):
    m = manifest(tmp_path, "# SYNTHETIC test manifest\nfile,A,B\nx.png,-1,\nx.png,1,0\n")
    ds = CSVDataset(m, path_col="file", label_cols=["A", "B"], size=8, uncertain=policy)
    assert np.isnan(ds.labels[0, 1]) and ds.labels[1].tolist() == [1.0, 0.0]
    assert (np.isnan(ds.labels[0, 0]) and math.isnan(expected)) or ds.labels[0, 0] == expected


def test_csv_bad_label_names_column_and_line(tmp_path):
    m = manifest(tmp_path, "path,A,B\nx.png,0,1\nx.png,1,2\n")
    with pytest.raises(ManifestError, match=r"column 'B', line 3: label '2'"):
        CSVDataset(m, label_cols=["A", "B"])


def test_csv_missing_columns(tmp_path):
    m = manifest(tmp_path, "path,A\nx.png,0\n")
    with pytest.raises(ManifestError, match=r"\['Cardiomegaly'\] missing"):
        CSVDataset(m, label_cols=["A", "Cardiomegaly"])
    with pytest.raises(ManifestError, match="path column 'Path' is missing"):
        CSVDataset(m, path_col="Path")


def test_csv_missing_image_raise_or_skip(tmp_path):
    m = manifest(tmp_path, "path,A\nx.png,0\nmissing.png,1\n")
    with pytest.raises(DataError, match=r"missing\.png: file does not exist"):
        CSVDataset(m, label_cols=["A"])
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = CSVDataset(m, label_cols=["A"], on_error="skip")
    assert len(ds) == 1 and ds.skip_report()["n_skipped"] == 1
    assert ds.labels.tolist() == [[0.0]]


def test_xrv_adapter_on_nih_dataset(tmp_path):
    xrv = pytest.importorskip("torchxrayvision", reason="optional extra [xrv] not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nih = xrv.datasets.NIH_Dataset(imgpath=str(tmp_path))  # ships its metadata CSV
    names = nih.csv["Image Index"].iloc[:3].tolist()
    rng = np.random.default_rng(0)
    for n in names:
        write_png(tmp_path / n, (rng.random((96, 80)) * 255).astype(np.uint8))
    ds = XRVAdapter(nih, size=32)
    assert ds.pathologies == list(nih.pathologies) and ds.labels.shape == nih.labels.shape
    for i in range(3):
        item = ds[i]
        assert item["img"].shape == (1, 32, 32)
        assert 0.0 <= item["img"].min() and item["img"].max() <= 1.0
        assert item["img"].mean() > 0.3  # [-1024, 1024] mapped to [0, 1], not clipped to 0
        np.testing.assert_array_equal(item["lab"].numpy(), nih.labels[i].astype(np.float32))
        assert names[i] in item["path"]
    with pytest.raises(DataError, match=r"NIH_Dataset\[5\]"):
        XRVAdapter(nih, size=32)[5]  # image file not generated -> names the item


class _WrongRange(torch.utils.data.Dataset):
    pathologies = ["A"]
    labels = np.zeros((1, 1), np.float32)

    def __len__(self):
        return 1

    def __getitem__(self, i):
        ramp = np.linspace(0, 255, 64, dtype=np.float32).reshape(1, 8, 8)  # skimage's 0..255
        return {"img": ramp, "lab": np.zeros(1), "idx": i}


def test_xrv_adapter_rejects_unnormalised_images():
    with pytest.raises(DataError, match="normalize"):
        XRVAdapter(_WrongRange(), size=8)[0]


def test_xrv_stand_in_serves_xrv_range_images() -> None:
    b = generate_batch(3, seed=0, cfg=PhantomConfig(size=32))
    xrv = XRVStandIn(b.images, b.labels, list(FINDINGS))
    assert len(xrv) == 3 and xrv.pathologies == list(FINDINGS)
    img = xrv[0]["img"]
    assert img.shape == (1, 32, 32) and img.min() >= -1024 and img.max() <= 1024
    assert np.allclose((img[0] + 1024) / 2048, b.images[0], atol=1e-5)
    np.testing.assert_array_equal(xrv[2]["lab"], b.labels[2])
    # the adapter maps it back to the kit's [0, 1]
    back = XRVAdapter(xrv, size=32)[0]["img"][0].numpy()
    np.testing.assert_allclose(back, b.images[0], atol=1e-5)


def test_resolve_dataset_specs(tmp_path, sample_dir) -> None:
    ds = resolve_dataset("phantoms[:5]", 32)
    assert isinstance(ds, PhantomDataset) and len(ds) == 5
    assert len(resolve_dataset("phantoms:7", 32)) == 7
    assert len(resolve_dataset("phantoms", 32, n=9)) == 9
    assert isinstance(resolve_dataset(str(sample_dir / "labels.csv"), 32), CSVDataset)
    assert isinstance(resolve_dataset(str(sample_dir), 32), FolderDataset)
    with pytest.raises(DataError, match="phantoms"):
        resolve_dataset("phantoms:abc", 32)
    with pytest.raises(DataError, match="no such file"):
        resolve_dataset(str(tmp_path / "missing"), 32)
