"""Phantom generator: determinism, anatomy, honest labels, reports, files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from radjepa_lab.data.findings import REPORT_PREFIX, parse_report
from radjepa_lab.data.phantom import (
    FINDINGS,
    STRUCTURES,
    PhantomConfig,
    PhantomDataset,
    derive_seed,
    generate_batch,
    generate_phantom,
    measure_ctr,
    phantom_columns,
    phantom_images,
    read_mask_png,
    write_phantoms,
)
from radjepa_lab.errors import ConfigError


def only(finding: str, size: int = 64, **kw) -> PhantomConfig:
    """Config where exactly ``finding`` is present (counterfactual pairs share the patient)."""
    return PhantomConfig(size=size, prevalence={f: float(f == finding) for f in FINDINGS}, **kw)


@pytest.fixture(scope="module")
def batch():
    return generate_batch(80, seed=3, cfg=PhantomConfig(size=64))


def test_same_seed_gives_identical_bytes_and_different_seeds_differ():
    cfg = PhantomConfig(size=96)
    a, b, c = generate_phantom(11, cfg), generate_phantom(11, cfg), generate_phantom(12, cfg)
    assert a.image.tobytes() == b.image.tobytes()
    assert all(a.masks[s].tobytes() == b.masks[s].tobytes() for s in STRUCTURES)
    assert a.report == b.report and a.meta == b.meta
    assert np.abs(a.image - c.image).mean() > 0.01


def test_image_range_dtype_and_shapes(batch):
    assert batch.images.dtype == np.float32 and batch.images.shape == (80, 64, 64)
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert batch.masks.shape == (80, len(STRUCTURES), 64, 64) and batch.masks.dtype == bool
    assert batch.labels.shape == (80, len(FINDINGS))
    assert set(np.unique(batch.labels)) <= {0.0, 1.0}
    # each finding occurs and is absent somewhere (prevalence 0.3, independent)
    assert (batch.labels.mean(0) > 0.1).all() and (batch.labels.mean(0) < 0.6).all()


def test_batch_rows_equal_single_phantoms_and_dataset_items(batch):
    cfg = PhantomConfig(size=64)
    p = generate_phantom(derive_seed(3, 7), cfg)
    assert np.array_equal(p.image, batch.images[7])
    ds = PhantomDataset(80, seed=3, cfg=cfg, return_masks=True)
    item = ds[7]
    assert item["img"].shape == (1, 64, 64) and item["img"].dtype == torch.float32
    assert torch.equal(item["img"][0], torch.from_numpy(batch.images[7]))
    assert torch.equal(item["lab"], torch.from_numpy(batch.labels[7]))
    assert item["masks"].dtype == torch.uint8 and item["masks"].shape == (4, 64, 64)
    assert item["report"] == batch.reports[7] and item["idx"] == 7
    assert ds.pathologies == list(FINDINGS)


def test_dataset_works_in_dataloader_workers():
    ds = PhantomDataset(8, seed=1, cfg=PhantomConfig(size=32))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    imgs = torch.cat([b["img"] for b in loader])
    assert imgs.shape == (8, 1, 32, 32)
    assert torch.equal(imgs[5], ds[5]["img"])


def test_radiological_orientation_right_lung_on_image_left(batch):
    cols = np.arange(64)
    for m in batch.masks:
        r, lft = m[0], m[1]
        assert r.sum() > 50 and lft.sum() > 50
        assert (r.sum(0) * cols).sum() / r.sum() < (lft.sum(0) * cols).sum() / lft.sum()
    canon = generate_phantom(0, PhantomConfig(size=64, nuisance=0.0))
    assert canon.masks["right_lung"][:, 32:].sum() == 0
    assert canon.masks["left_lung"][:, :32].sum() == 0


def test_lungs_dark_heart_and_ribs_brighter(batch):
    for img, m in zip(batch.images[:20], batch.masks[:20], strict=True):
        lung = m[0] | m[1]
        assert img[lung].mean() + 0.1 < img[m[2]].mean()
        # ribs over lung are denser than the lung between them
        assert img[lung & m[3]].mean() > img[lung & ~m[3]].mean()


def test_cardiomegaly_label_is_the_measured_ctr(batch):
    ctrs = []
    for m, lab, meta in zip(batch.masks, batch.labels, batch.meta, strict=True):
        heart_cols = np.flatnonzero(m[2].any(0))
        lung_cols = np.flatnonzero((m[0] | m[1]).any(0))
        ctr = (heart_cols[-1] - heart_cols[0] + 1) / (lung_cols[-1] - lung_cols[0] + 1)
        assert ctr == pytest.approx(meta["ctr"], abs=1e-4)
        assert lab[0] == float(ctr > 0.5)
        ctrs.append(ctr)
    ctrs = np.array(ctrs)
    pos = batch.labels[:, 0] == 1
    assert ctrs[pos].min() > 0.5 and ctrs[~pos].max() <= 0.5
    assert 0.33 < ctrs.min() < 0.45 and 0.55 < ctrs.max() < 0.67  # drawn continuously


def test_measure_ctr_on_hand_made_masks():
    z = np.zeros((10, 20), bool)
    lungs_r, lungs_l, heart = z.copy(), z.copy(), z.copy()
    lungs_r[2:8, 1:8], lungs_l[2:8, 12:19], heart[5:9, 6:15] = True, True, True
    masks = {"right_lung": lungs_r, "left_lung": lungs_l, "heart": heart, "ribs": z}
    assert measure_ctr(masks) == pytest.approx(9 / 18)


def test_report_round_trip_and_synthetic_marking(batch):
    for rep, lab in zip(batch.reports, batch.labels, strict=True):
        assert rep.startswith(REPORT_PREFIX)
        assert parse_report(rep) == {f: int(v) for f, v in zip(FINDINGS, lab, strict=True)}


def test_phantom_columns_colour_by_findings_and_nuisance(batch):
    cols = phantom_columns(batch)
    assert all(len(v) == len(batch.images) for v in cols.values())
    assert set(FINDINGS) <= set(cols) and "exposure gain" in cols
    for j, f in enumerate(FINDINGS):
        np.testing.assert_array_equal(cols[f], batch.labels[:, j])
    np.testing.assert_array_equal(cols["number of findings"], batch.labels.sum(1))
    np.testing.assert_allclose(cols["cardiothoracic ratio"], [m["ctr"] for m in batch.meta])


def test_phantom_images_equal_the_dataset_items():
    imgs = phantom_images(5, seed=2, size=32)
    ds = PhantomDataset(5, seed=2, cfg=PhantomConfig(size=32))
    assert imgs.shape == (5, 32, 32) and imgs.dtype == np.float32
    assert all(np.array_equal(imgs[i], ds[i]["img"][0].numpy()) for i in range(5))
    assert phantom_images(0, seed=2, size=32).shape == (0, 32, 32)


def test_counterfactual_findings_change_only_their_region():
    base = PhantomConfig(size=64, prevalence=0.0)
    for seed in range(3):
        q = generate_phantom(seed, base)
        p = generate_phantom(seed, only("nodule"))
        changed = np.abs(p.image - q.image) > 0.02
        lungs = p.masks["right_lung"] | p.masks["left_lung"]
        assert changed.sum() >= np.pi * 3**2 * 0.8  # >= ~3 px radius at 64 px
        assert (changed & lungs).sum() > 0.8 * changed.sum()
        side = p.meta["nodule_side"]
        assert (changed & p.masks[f"{side}_lung"]).sum() > 0.7 * changed.sum()


def test_findings_are_sized_in_millimetres():
    areas = {}
    for size in (64, 128):
        q = generate_phantom(5, PhantomConfig(size=size, prevalence=0.0))
        p = generate_phantom(5, only("nodule", size=size))
        areas[size] = (np.abs(p.image - q.image) > 0.02).sum()
    assert 3.0 < areas[128] / areas[64] < 5.5


def test_pneumothorax_is_missing_texture_and_a_line_not_darkness():
    for seed in range(4):
        q = generate_phantom(seed, PhantomConfig(size=128, prevalence=0.0))
        p = generate_phantom(seed, only("pneumothorax", size=128))
        side = p.meta["pneumothorax_side"]
        lung = p.masks[f"{side}_lung"]
        diff = p.image - q.image
        assert abs(diff[lung].mean()) < 0.02  # mean intensity matched to normal lung
        assert np.abs(diff[lung]).max() > 0.1  # but the pleural line / texture changed
        other = p.masks["left_lung" if side == "right" else "right_lung"]
        assert np.abs(diff[other]).max() < 1e-6


def test_effusion_blunts_a_base_on_its_side():
    for seed in range(4):
        q = generate_phantom(seed, PhantomConfig(size=64, prevalence=0.0))
        p = generate_phantom(seed, only("effusion"))
        diff = p.image - q.image
        side = p.meta["effusion_side"]
        lung = p.masks[f"{side}_lung"]
        rows = np.nonzero(lung)[0]
        lower = lung & (np.arange(64)[:, None] > np.median(rows))
        assert diff[lower].mean() > 0.03  # the base becomes denser
        assert diff[lower].mean() > 3 * max(diff[lung & ~lower].mean(), 0.0)


def test_nuisance_zero_is_the_canonical_template():
    cfg = PhantomConfig(size=64, nuisance=0.0, prevalence=0.0)
    a, b = generate_phantom(1, cfg), generate_phantom(2, cfg)
    assert a.meta["rotation_deg"] == 0 and a.meta["scale"] == 1 and a.meta["shift_mm"] == (0, 0)
    assert np.array_equal(a.masks["ribs"], b.masks["ribs"])
    assert a.meta["ecg_electrodes"] == 0


def test_nuisance_varies_pose():
    metas = generate_batch(30, 0, PhantomConfig(size=32, prevalence=0.0)).meta
    rot = np.array([m["rotation_deg"] for m in metas])
    assert rot.std() > 2.0 and np.abs(rot).max() <= 8.0


@pytest.mark.parametrize(
    "kw",
    [{"size": 8}, {"fov_mm": 0}, {"nuisance": -1}, {"prevalence": 1.5},
     {"prevalence": {"tumour": 0.2}}, {"ctr_range": (0.55, 0.6)}],
)
def test_bad_config_raises_config_error(kw):
    with pytest.raises(ConfigError):
        PhantomConfig(**kw)


def test_write_phantoms_files_are_marked_synthetic(tmp_path):
    out = write_phantoms(4, 48, tmp_path / "ph", seed=2)
    with open(out / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["synthetic"] == "SYNTHETIC" for r in rows)
    p = generate_phantom(derive_seed(2, 1), PhantomConfig(size=48))
    assert [int(rows[1][k]) for k in FINDINGS] == [p.labels[k] for k in FINDINGS]
    masks = read_mask_png(out / "masks" / "phantom_00001.png")
    assert all(np.array_equal(masks[s], p.masks[s]) for s in STRUCTURES)
    from PIL import Image

    img = np.asarray(Image.open(out / rows[1]["path"])).astype(np.float32) / 255
    assert np.abs(img - p.image).max() <= 0.5 / 255 + 1e-6
    reports = [json.loads(line) for line in open(out / "reports.jsonl")]
    assert reports[1]["report"] == p.report and reports[1]["report"].startswith("SYNTHETIC")


def test_committed_sample_is_what_the_generator_writes(tmp_path):
    """data/sample must be regenerable: `radjepa-lab make-phantoms --n 32 --size 128
    --out data/sample` (seed 0). If this fails after a generator change, regenerate it."""
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    if not (sample / "labels.csv").exists():
        pytest.skip("data/sample is not present in this checkout")
    fresh = write_phantoms(3, 128, tmp_path / "fresh", seed=0)
    committed = (sample / "labels.csv").read_text().splitlines()
    assert fresh.joinpath("labels.csv").read_text().splitlines() == committed[:4]
    assert len(committed) == 33 and all(line.endswith("SYNTHETIC") for line in committed[1:])
    from PIL import Image

    for name in ("images/phantom_00002.png", "masks/phantom_00002.png"):  # pixels, not zlib bytes
        assert np.array_equal(np.asarray(Image.open(fresh / name)),
                              np.asarray(Image.open(sample / name)))


def test_phantom_needs_only_numpy_and_torch():
    """The GPU box has torch, timm and numpy only: generating phantoms must not need more."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('PIL', 'pydicom', 'scipy', 'matplotlib', 'pandas', 'torchxrayvision'):\n"
        "    sys.modules[m] = None\n"
        "from radjepa_lab.data.phantom import PhantomDataset\n"
        "print(PhantomDataset(2, cfg=None)[1]['img'].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 128, 128])" in out.stdout
