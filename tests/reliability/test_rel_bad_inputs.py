"""The bad-input corpus: every broken file gives a kit exception naming the file and the
problem; odd-but-legal files decode correctly; ``on_error="skip"`` keeps going and reports."""

from __future__ import annotations

import builtins
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import Case, dicom_corpus, image_corpus, path_corpus, valid_dicom, write_big_png
from guards import reset_peak_rss, vm_kib

from radjepa_lab.data.datasets import CSVDataset, FolderDataset
from radjepa_lab.data.images import load_image
from radjepa_lab.errors import DataError, ManifestError, RadJEPALabError

DICOM_CASES = [
    "dicom-truncated-preamble", "dicom-truncated-magic", "dicom-truncated-meta",
    "dicom-truncated-before_pixels", "dicom-truncated-pixel_header",
    "dicom-truncated-pixel_middle", "dicom-truncated-last_byte", "dicom-zero-bytes",
    "dicom-no-pixeldata", "dicom-wrong-magic", "dicom-compressed-no-decoder", "dicom-rgb",
    "dicom-signed-negative-intercept", "dicom-big-endian", "dicom-4-frames",
    "dicom-float-nan-pixel", "dicom-float-inf-pixel",
]
# every attribute that changes how a DICOM image is displayed (corpus.display_corpus)
DISPLAY_CASES = [
    "dicom-rescale-slope-0", "dicom-rescale-slope-alone", "dicom-modality-lut-sequence",
    "dicom-modality-lut-12-bit", "dicom-voi-lut-8-bit", "dicom-voi-lut-12-bit",
    "dicom-voi-lut-16-bit", "dicom-voi-lut-data-beyond-descriptor", "dicom-voi-lut-9-bit",
    "dicom-voi-lut-length", "dicom-window-linear", "dicom-window-linear-exact",
    "dicom-window-sigmoid", "dicom-window-negative-slope", "dicom-voi-function-unknown",
    "dicom-window-width-0", "dicom-window-center-alone", "dicom-monochrome1",
    "dicom-monochrome1-inverse", "dicom-monochrome2-inverse", "dicom-monochrome2-identity",
    "dicom-monochrome1-identity", "dicom-plut-shape-unknown", "dicom-plut-sequence",
    "dicom-photometric-unknown", "dicom-pixel-padding", "dicom-pixel-padding-range",
    "dicom-pixel-padding-everywhere", "dicom-12-bit-garbage-above",
    "dicom-signed-12-bit-garbage-above", "dicom-highbit-not-bitsstored-1",
    "dicom-bitsstored-above-allocated", "dicom-palette-color", "dicom-palette-without-palette",
    "dicom-ybr-full", "dicom-3-samples-monochrome", "dicom-enhanced-frame-window",
    "dicom-dicomdir",
]
IMAGE_CASES = [
    "png-zero-bytes", "png-truncated", "png-corrupt-idat", "png-garbage-after-signature",
    "png-text-file", "png-16-bit", "png-1x1", "tiff-nan-pixel", "tiff-inf-pixel",
    "tiff-neg-inf-pixel",
]
# what the image formats' own metadata says about display (corpus.format_corpus)
FORMAT_CASES = [
    "png-palette", "png-palette-colour", "png-alpha-opaque", "png-alpha-transparent",
    "png-trns-gray", "png-16-bit-sbit-12", "png-16-bit-sbit-12-scaled", "png-gamma-1",
    "png-gamma-srgb", "png-icc-srgb", "png-icc-mismatch", "png-1-bit", "tiff-white-is-zero-8",
    "tiff-white-is-zero-16", "tiff-white-is-zero-float", "tiff-palette", "tiff-16-bit",
    "tiff-int16-signed", "tiff-uint32", "tiff-float32", "tiff-float64", "tiff-two-pages",
    "tiff-orientation-180", "jpeg-exif-orientation-6",
]
PATH_CASES = ["path-missing", "path-missing-dcm", "path-folder", "path-dangling-symlink"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("corpus")
    cases = dicom_corpus(root / "dicom") + image_corpus(root / "images") + path_corpus(
        root / "paths")
    return {c.name: c for c in cases}


ALL_CASES = DICOM_CASES + DISPLAY_CASES + IMAGE_CASES + FORMAT_CASES + PATH_CASES


def test_corpus_lists_every_case(corpus: dict[str, Case]) -> None:
    assert sorted(corpus) == sorted(ALL_CASES)


def check_case(case: Case) -> np.ndarray | None:
    """Run ``load_image`` on the case and check the outcome; returns the image if decoded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.error is not None:
            with pytest.raises(case.error) as info:
                load_image(case.path)
            msg = str(info.value)
            assert str(case.path) in msg, f"{case.name}: message does not name the file: {msg}"
            assert re.search(case.problem, msg, re.I | re.S), f"{case.name}: {msg}"
            return None
        img = load_image(case.path)
    assert img.dtype == np.float32 and img.ndim == 2 and img.size > 0
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    if case.check is not None:
        case.check(img)
    texts = [str(w.message) for w in caught]
    if case.warns:
        hits = [t for t in texts if re.search(case.warns, t)]
        assert hits and all(str(case.path) in t for t in hits), texts
    return img


@pytest.mark.parametrize("name", ALL_CASES)
def test_bad_input_case(corpus: dict[str, Case], name: str) -> None:
    check_case(corpus[name])


def test_truncation_offsets_span_the_file(corpus: dict[str, Case]) -> None:
    """The truncation cases really cut at different places (header, pixel element, pixels)."""
    offs = sorted(int(c.tags["offset"]) for c in corpus.values() if "offset" in c.tags)
    size = (corpus["dicom-truncated-preamble"].path.parent / "good.dcm").stat().st_size
    assert len(set(offs)) == 7 and offs[0] < 128 and offs[-1] == size - 1


def _unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000; as root (which ignores modes) ``open`` is made to fail the same way."""
    path.chmod(0)
    if os.access(path, os.R_OK):
        real_open = builtins.open

        def fake_open(file, *args, **kw):  # noqa: ANN001 - mirrors builtins.open
            if isinstance(file, str | os.PathLike) and Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kw)

        monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize("suffix", [".png", ".dcm"])
def test_unreadable_file_says_permission_not_corrupt(tmp_path: Path, suffix: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"locked{suffix}"
    if suffix == ".dcm":
        valid_dicom(path)
    else:
        from PIL import Image

        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    _unreadable(path, monkeypatch)
    with pytest.raises(DataError) as info:
        load_image(path)
    msg = str(info.value)
    assert str(path) in msg and "permission" in msg.lower(), msg
    assert "corrupt" not in msg.lower(), f"a permission problem is not a corrupt file: {msg}"


# ----------------------------------------------------------------------------- datasets


def _good_files(root: Path, n: int = 3) -> list[Path]:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"good_{i}.png"
        Image.fromarray(np.full((20, 30), 40 * (i + 1), np.uint8)).save(p)
        out.append(p)
    return out


def _bad_file_cases(corpus: dict[str, Case]) -> list[Case]:
    """Files a dataset must refuse (a DICOMDIR is no image: folder datasets leave it out, see
    test_rel_datasets)."""
    return [c for c in corpus.values()
            if c.error is not None and c.path.is_file() and c.name != "dicom-dicomdir"]


def test_folder_dataset_skip_mode_continues_and_reports_every_bad_file(
        corpus: dict[str, Case], tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    good = _good_files(root)
    bad = _bad_file_cases(corpus)
    for c in bad:
        shutil.copy(c.path, root / f"{c.name}{c.path.suffix}")
    with pytest.warns(UserWarning, match="skipped 2 missing/empty"):  # the two 0-byte files
        ds = FolderDataset(root, size=16, on_error="skip")
    with pytest.warns(UserWarning, match="skipping") as rec:
        items = [ds[i] for i in range(len(ds))]
        items = [ds[i] for i in range(len(ds))]  # a second epoch meets the same bad files
    warned = " ".join(str(w.message) for w in rec)
    assert all(f"{c.name}{c.path.suffix}" in warned for c in bad if c.path.stat().st_size)
    report = ds.scan()
    assert report["n_skipped"] == len(ds.skipped) == len(bad)  # each bad file counted once
    assert len(ds) == len(good) == report["n_items"]
    assert {Path(it["path"]).name for it in items} == {p.name for p in good}
    for it in items:
        assert it["img"].shape == (1, 16, 16) and 0 <= it["img"].min() <= it["img"].max() <= 1
    skipped_names = {Path(p).name for p, _ in ds.skipped}
    assert skipped_names == {f"{c.name}{c.path.suffix}" for c in bad}
    for path, reason in ds.skipped:
        assert Path(path).name in reason or "(0 bytes)" in reason, (path, reason)
    assert any(it["n_skipped"] > 0 for it in items)  # items say a skip happened before them


def test_folder_dataset_raise_mode_names_each_bad_file(corpus: dict[str, Case],
                                                        tmp_path: Path) -> None:
    for c in _bad_file_cases(corpus):
        root = tmp_path / c.name
        _good_files(root, 1)
        target = root / f"bad{c.path.suffix}"
        shutil.copy(c.path, target)
        with pytest.raises(DataError) as info:
            ds = FolderDataset(root, size=16)
            for i in range(len(ds)):
                ds[i]
        assert str(target) in str(info.value), (c.name, str(info.value))


def _manifest(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "labels.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, field, problem", [
    ("file,effusion\na.png,1\n", "'path'", r"path column"),
    ("path,effusion\na.png,1\n", "'nodule'", r"label column"),
    ("path,effusion\na.png,yes\n", "'effusion'", r"line 2.*'yes'"),
    ("path,effusion\na.png,1\nb.png,2\n", "'effusion'", r"line 3.*'2'"),
    ("path,effusion\na.png,1\nb.png\n", "line 3", r"fields"),
    ("path,effusion\n", "no rows", r"no rows"),
    ("", "empty", r"empty"),
])
def test_csv_manifest_errors_name_the_manifest_and_field(tmp_path: Path, text: str, field: str,
                                                         problem: str) -> None:
    _good_files(tmp_path, 2)
    (tmp_path / "a.png").write_bytes((tmp_path / "good_0.png").read_bytes())
    (tmp_path / "b.png").write_bytes((tmp_path / "good_1.png").read_bytes())
    csv_path = _manifest(tmp_path, text)
    cols = ["effusion", "nodule"] if "nodule" in field else ["effusion"]
    with pytest.raises(ManifestError) as info:
        CSVDataset(csv_path, label_cols=cols if text.startswith("path,") else None, size=16)
    msg = str(info.value)
    assert str(csv_path) in msg and field.strip("'") in msg and re.search(problem, msg), msg


def test_csv_nonexistent_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing.csv.*does not exist"):
        CSVDataset(tmp_path / "missing.csv")


def test_csv_rows_with_bad_paths_raise_or_skip(corpus: dict[str, Case], tmp_path: Path) -> None:
    good = _good_files(tmp_path / "img", 2)
    bad = [corpus[n].path for n in PATH_CASES] + [c.path for c in _bad_file_cases(corpus)]
    rows = [f"{p},1" for p in good + bad]
    csv_path = _manifest(tmp_path, "path,effusion\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:  # raise mode: the first missing path, at build time
        CSVDataset(csv_path, label_cols=["effusion"], size=16)
    assert str(corpus["path-missing"].path) in str(info.value)
    with pytest.warns(UserWarning):
        ds = CSVDataset(csv_path, label_cols=["effusion"], size=16, on_error="skip")
        items = [ds[i] for i in range(len(ds))]
        ds.scan()
    assert {it["path"] for it in items} == {str(p) for p in good}
    assert {p for p, _ in ds.skipped} == {str(p) for p in bad}
    assert all(torch.equal(it["lab"], torch.ones(1)) for it in items)


def test_nan_images_never_reach_the_training_cache(tmp_path: Path) -> None:
    """A NaN/Inf image in an in-memory dataset must not be silently cast to 0 in the uint8
    cache: pretraining refuses it with a DataError naming the item."""
    from radjepa_lab.config import with_steps
    from radjepa_lab.presets import get_preset
    from radjepa_lab.train import pretrain

    cfg = get_preset("smoke")
    cfg.monitor_batch = 8
    with_steps(cfg, 2)  # caps the warmup (pretrain checks the config)
    imgs = [{"img": torch.full((1, 32, 32), 0.5)} for _ in range(16)]
    imgs[5] = {"img": torch.full((1, 32, 32), float("nan"))}
    with pytest.raises(DataError, match=r"image 5 .*NaN/Inf"):
        pretrain(cfg, tmp_path / "nan", dataset=imgs, progress=False)
    imgs[5] = {"img": torch.full((1, 32, 32), float("inf"))}
    with pytest.raises(DataError, match=r"(?i)inf"):
        pretrain(cfg, tmp_path / "inf", dataset=imgs, progress=False)


# ----------------------------------------------------------------------------- memory


def test_huge_png_is_reduced_while_reading_with_bounded_memory(tmp_path: Path) -> None:
    """10000 x 10000 8-bit PNG through a dataset at 64 px: peak RSS grows by at most the
    decoded 8-bit frame (+25%), never by a full-resolution float copy (4-8x that)."""
    root = tmp_path / "big"
    root.mkdir()
    path = write_big_png(root / "huge.png", 10_000, 10_000)
    native_mib = 10_000 * 10_000 / 2**20
    if not reset_peak_rss():
        pytest.skip("cannot reset peak RSS here (/proc/self/clear_refs not writable)")
    before = vm_kib("VmRSS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning at 1e8 pixels
        ds = FolderDataset(root, size=64)
        item = ds[0]
    growth_mib = (vm_kib("VmHWM") - before) / 1024
    assert item["img"].shape == (1, 64, 64)
    assert growth_mib < 1.25 * native_mib + 16, f"peak grew {growth_mib:.0f} MiB"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = load_image(path, max_side=256)
    assert max(small.shape) <= 2 * 256
    # the ramp row survives reduction: left dark, right brighter
    assert small[:, :4].mean() < small[:, 100:120].mean()


def test_decompression_bomb_is_a_kit_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    from PIL import Image

    path = write_big_png(tmp_path / "bomb.png", 3000, 3000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # 9e6 px > 2x the limit
    with pytest.raises(RadJEPALabError, match=r"bomb\.png.*too large"):
        load_image(path)
