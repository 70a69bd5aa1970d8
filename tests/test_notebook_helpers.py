"""radjepa_lab.notebook: the helpers every course notebook calls (no kernel started here)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from radjepa_lab import notebook as N
from radjepa_lab.config import ModelConfig, TrainConfig, config_to_dict, resolve_profile
from radjepa_lab.errors import CheckpointError
from radjepa_lab.masks import MaskConfig, MultiBlockMaskSampler, coverage_heatmap
from radjepa_lab.models import build_encoder, build_predictor
from radjepa_lab.train import save_checkpoint

TINY = ModelConfig(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                   pred_embed_dim=8, pred_depth=1, pred_num_heads=2)


def _write_ckpt(path: Path, step: int, seed: int = 0) -> Path:
    enc = build_encoder(TINY, seed=seed)
    return save_checkpoint(path, {
        "format": "radjepa_lab", "version": 1, "step": step,
        "config": config_to_dict(TrainConfig(model=TINY, steps=10, warmup=1)),
        "encoder": enc.state_dict(), "target_encoder": copy.deepcopy(enc).state_dict(),
        "predictor": build_predictor(TINY, seed=seed).state_dict(),
    })


def test_setup_prints_profile_device_and_time(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RADJEPA_LAB_PROFILE", "smoke")
    prof = N.setup(seed=3, minutes={"smoke": 0.4})
    out = capsys.readouterr().out
    assert prof.name == prof.preset == "smoke"
    assert "profile=smoke" in out and ("device: cpu" in out or "device: cuda" in out)
    assert "~0.4 min" in out and "this notebook" in out
    a = torch.rand(3)
    N.setup(seed=3, verbose=False)
    assert torch.equal(torch.rand(3), a), "setup must seed torch reproducibly"


def test_sizes_grow_with_the_profile() -> None:
    smoke, cpu = N.sizes(resolve_profile("smoke")), N.sizes(resolve_profile("cpu"))
    assert smoke.n_train < cpu.n_train and smoke.n_resamples < cpu.n_resamples
    assert smoke.projection in ("umap", "pca")


def test_pick_checkpoint_prefers_the_fresh_run(tmp_path, monkeypatch, capsys) -> None:
    prof = resolve_profile("smoke")
    monkeypatch.setattr(N, "RUNS_DIR", tmp_path / "runs")
    shipped = _write_ckpt(tmp_path / "shipped.pt", step=7)
    choice = N.pick_checkpoint(prof, shipped=shipped)
    assert choice.source == "shipped" and choice.step == 7
    assert "shipped checkpoint" in capsys.readouterr().out
    _write_ckpt(N.fresh_run_dir(prof) / "checkpoint.pt", step=3)
    choice = N.pick_checkpoint(prof, shipped=shipped)
    assert choice.source == "fresh" and choice.step == 3
    assert "fresh run from 03_pretraining" in capsys.readouterr().out
    # another preset's run is never picked up
    other = resolve_profile("cpu")
    assert N.pick_checkpoint(other, shipped=shipped, verbose=False).source == "shipped"


def test_pick_checkpoint_explains_when_nothing_exists(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(N, "RUNS_DIR", tmp_path / "runs")
    with pytest.raises(CheckpointError, match="03_pretraining"):
        N.pick_checkpoint(resolve_profile("smoke"), shipped=tmp_path / "missing.pt")


def test_corrupt_fresh_run_falls_back_with_a_note(tmp_path, monkeypatch) -> None:
    prof = resolve_profile("smoke")
    monkeypatch.setattr(N, "RUNS_DIR", tmp_path / "runs")
    bad = N.fresh_run_dir(prof) / "checkpoint.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"truncated")
    choice = N.pick_checkpoint(prof, shipped=_write_ckpt(tmp_path / "s.pt", 5), verbose=False)
    assert choice.source == "shipped" and "unreadable" in choice.note


def test_load_jepa_restores_all_three_networks(tmp_path) -> None:
    path = _write_ckpt(tmp_path / "c.pt", step=2, seed=4)
    jepa = N.load_jepa(path)
    ref = build_encoder(TINY, seed=4)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(jepa.encoder(x), ref(x))
        assert torch.allclose(jepa.target_encoder(x), ref(x))
    assert not jepa.encoder.training and jepa.info["step"] == 2
    assert jepa.config.model == TINY


def test_border_biased_sampler_never_reaches_the_last_row() -> None:
    cfg = MaskConfig()
    biased = coverage_heatmap(N.BorderBiasedSampler((14, 14), cfg), n_batches=5, batch_size=32)
    fixed = coverage_heatmap(MultiBlockMaskSampler((14, 14), cfg), n_batches=5, batch_size=32)
    assert biased[-1].max() == 0 and biased[:, -1].max() == 0
    assert fixed[-1].max() > 0 and fixed[:, -1].max() > 0


def test_collapse_summary_flags_a_falling_rankme() -> None:
    good = [{"rankme": 10.0, "feat_std": 0.06, "feat_std_ref": 0.07},
            {"rankme": 14.0, "feat_std": 0.06, "feat_std_ref": 0.07}]
    bad = [{"rankme": 14.0}, {"rankme": 4.8}]
    assert "healthy" in N.collapse_summary(good)
    assert "WARNING" in N.collapse_summary(bad) and "14.0 -> 4.8" in N.collapse_summary(bad)
    flat = [{"rankme": 5.0, "feat_std": 0.001, "feat_std_ref": 0.07}] * 2
    assert "nearly constant" in N.collapse_summary(flat)
    # a dip: the split after the 5 leading directions says whether dimensions were lost
    grow = [{"rankme": 40.0, "rankme_tail5": 60.0}, {"rankme": 33.0, "rankme_tail5": 59.0},
            {"rankme": 41.0, "rankme_tail5": 58.0}]
    lost = [{"rankme": 40.0, "rankme_tail5": 60.0}, {"rankme": 33.0, "rankme_tail5": 40.0},
            {"rankme": 41.0, "rankme_tail5": 58.0}]
    assert "dipped to 33.0" in N.collapse_summary(grow)
    assert "60.0 -> 59.0" in N.collapse_summary(grow) and "leading directions grew" in (
        N.collapse_summary(grow))
    assert "dimensions were lost" in N.collapse_summary(lost)
    assert "dipped" not in N.collapse_summary(good)
    # strict: a log even 0.25 % under the first one is a dip (issue 4, "not below its init value")
    small = [{"rankme": 40.0}, {"rankme": 39.9}, {"rankme": 41.0}]
    assert "dipped to 39.9" in N.collapse_summary(small)


def test_live_curves_collect_outside_jupyter() -> None:
    live = N.LiveCurves(history=[{"step": 1, "loss": 1.0}])
    live({"step": 2, "loss": 0.5})
    assert [r["step"] for r in live.history] == [1, 2]
    live.draw()  # no IPython: a no-op, must not raise
    assert live.figure().axes


def test_phantom_columns_and_xrv_stand_in() -> None:
    from radjepa_lab.data.phantom import FINDINGS, PhantomConfig, generate_batch

    b = generate_batch(3, seed=0, cfg=PhantomConfig(size=32))
    cols = N.phantom_columns(b)
    assert all(len(v) == 3 for v in cols.values())
    assert set(FINDINGS) <= set(cols) and "exposure gain" in cols
    xrv = N.XRVStandIn(b.images, b.labels, list(FINDINGS))
    img = xrv[0]["img"]
    assert img.shape == (1, 32, 32) and img.min() >= -1024 and img.max() <= 1024
    assert np.allclose((img[0] + 1024) / 2048, b.images[0], atol=1e-5)


def test_dicom_steps_end_with_air_dark() -> None:
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    steps = N.dicom_steps(get_testdata_file("RG1_UNCR.dcm"))
    assert [s.title[0] for s in steps] == ["1", "2", "3", "4"]
    out = steps[-1].image
    assert 0 <= out.min() and out.max() <= 1
    assert "inverted" in steps[-1].note
    corner = out[:20, :20].mean()  # air outside the body, top-left
    centre = out[out.shape[0] // 3 : out.shape[0] // 2, out.shape[1] // 2 - 10 : out.shape[1] // 2 + 10]
    assert corner < centre.mean(), "MONOCHROME1 must come back with air dark"
    assert N.plot_dicom_steps(steps).axes


def test_shipped_checkpoint_matches_its_documented_recipe() -> None:
    """data/README.md says the shipped checkpoint is ``--preset gpu-phantom``; prove it, so the
    documented command cannot drift from the file the notebooks load."""
    from radjepa_lab.config import config_to_dict, get_preset
    from radjepa_lab.train import load_checkpoint

    state = load_checkpoint(N.SHIPPED_CHECKPOINT)
    assert N.SHIPPED_CHECKPOINT.stat().st_size <= 10 * 2**20
    want = config_to_dict(get_preset("gpu-phantom"))
    got = dict(state["config"])
    for volatile in ("device", "expected_minutes", "description"):
        want.pop(volatile), got.pop(volatile)
    assert got == want
    assert state["step"] == want["steps"]
    # its training log sits beside it and shows RankMe rising over the run
    import json

    log = [json.loads(ln) for ln in
           (N.SHIPPED_CHECKPOINT.parent / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert log[-1]["step"] == want["steps"]
    rk = [r["rankme"] for r in log if r.get("rankme") is not None]
    assert rk[-1] > 1.5 * rk[0]
