"""radjepa_lab.notebook: the helpers every course notebook calls (no kernel started here)."""

from __future__ import annotations

import pytest
import torch
from helpers import write_kit_checkpoint

from radjepa_lab import notebook as N
from radjepa_lab.errors import CheckpointError
from radjepa_lab.presets import PRESETS, PROFILE_TABLE, resolve_profile


def test_setup_prints_profile_device_and_time(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RADJEPA_LAB_PROFILE", "smoke")
    prof = N.setup("03_pretraining", seed=3)
    out = capsys.readouterr().out
    assert prof.name == prof.preset == "smoke"
    assert "profile=smoke" in out and ("device: cpu" in out or "device: cuda" in out)
    minutes = PROFILE_TABLE["smoke"].notebook_minutes["03_pretraining"]
    assert f"~{minutes:g} min" in out and "this notebook" in out
    a = torch.rand(3)
    N.setup(seed=3, verbose=False)
    assert torch.equal(torch.rand(3), a), "setup must seed torch reproducibly"
    # without a notebook name it shows the preset's pretraining time instead
    N.setup(seed=3)
    out = capsys.readouterr().out
    pretrain_minutes = PRESETS["smoke"].minutes[prof.device]
    assert f"~{pretrain_minutes:g} min" in out and "pretraining with this preset" in out


def test_analysis_models_put_your_run_beside_the_shipped_one(tmp_path, monkeypatch, capsys) -> None:
    prof = resolve_profile("smoke")
    monkeypatch.setattr(N, "RUNS_DIR", tmp_path / "runs")
    shipped = write_kit_checkpoint(tmp_path / "shipped.pt", step=7)
    models = N.analysis_models(prof, shipped=shipped)
    assert list(models) == ["shipped"] and models["shipped"].step == 7
    out = capsys.readouterr().out
    assert "analysing: shipped checkpoint" in out and "your 03 run: not found" in out
    write_kit_checkpoint(N.fresh_run_dir(prof) / "checkpoint.pt", step=3)
    models = N.analysis_models(prof, shipped=shipped)
    assert list(models) == ["shipped", "yours"] and models["yours"].step == 3
    assert "beside it: your 03 run" in capsys.readouterr().out
    # the visible choice at the top of a notebook puts your run first, never silently
    models = N.analysis_models(prof, main="yours", shipped=shipped)
    assert list(models) == ["yours", "shipped"]
    assert capsys.readouterr().out.startswith("analysing: your 03 run")
    # another preset's run is never picked up
    assert list(N.analysis_models(resolve_profile("cpu"), shipped=shipped, verbose=False)) == [
        "shipped"]


def test_analysis_models_explain_a_missing_main_model(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(N, "RUNS_DIR", tmp_path / "runs")
    prof = resolve_profile("smoke")
    with pytest.raises(CheckpointError, match="git checkout"):
        N.analysis_models(prof, shipped=tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="03_pretraining"):
        N.analysis_models(prof, main="yours", shipped=tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="main='theirs'"):
        N.analysis_models(prof, main="theirs")


def test_corrupt_run_is_left_out_with_a_note(tmp_path, monkeypatch, capsys) -> None:
    prof = resolve_profile("smoke")
    monkeypatch.setattr(N, "RUNS_DIR", tmp_path / "runs")
    bad = N.fresh_run_dir(prof) / "checkpoint.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"truncated")
    shipped = write_kit_checkpoint(tmp_path / "s.pt", step=5)
    assert list(N.analysis_models(prof, shipped=shipped)) == ["shipped"]
    assert "your 03 run: unreadable" in capsys.readouterr().out


def test_live_curves_collect_outside_jupyter() -> None:
    live = N.LiveCurves(history=[{"step": 1, "loss": 1.0}])
    live({"step": 2, "loss": 0.5})
    assert [r["step"] for r in live.history] == [1, 2]
    live.draw()  # no IPython: a no-op, must not raise
    assert live.figure().axes


def test_claim_prints_what_holds_and_refuses_what_does_not(capsys) -> None:
    N.claim(0.6 > 0.4, "the model beats random init")
    assert "the model beats random init" in capsys.readouterr().out
    with pytest.raises(N.ClaimFailed, match="pixels lose.*do not bear it out"):
        N.claim(False, "pixels lose")


def test_live_curves_say_the_measured_speed_once(capsys) -> None:
    live = N.LiveCurves(total_steps=100, batch_size=10)
    live({"step": 1, "loss": 1.0, "imgs_per_s": 5.0})
    assert capsys.readouterr().out == ""  # step 1 is start-up, not a speed
    live({"step": 20, "loss": 0.9, "imgs_per_s": 50.0})
    out = capsys.readouterr().out
    assert "measured 50 images/s" in out and "about 0.3 min to go" in out  # 80 steps x 10 / 50
    live({"step": 40, "loss": 0.8, "imgs_per_s": 50.0})
    assert capsys.readouterr().out == ""


def test_comparison_runs_name_the_command_for_missing_shipped_files(tmp_path, monkeypatch) -> None:
    """Notebook 09 outside the smoke profile: the three shipped checkpoints of one budget, or an
    error that says how to make them."""
    from radjepa_lab import checkpoints as C

    fake = {o: tmp_path / p.name for o, p in C.SHIPPED_CHECKPOINTS.items()}
    monkeypatch.setattr(N, "shipped_checkpoints", lambda: fake)
    monkeypatch.setattr(N, "SHIPPED_CHECKPOINTS", fake)
    with pytest.raises(CheckpointError, match=r"radjepa_lab_phantom_dino\.pt.*bench/objectives\.sh"):
        N.comparison_runs(resolve_profile("cpu"), verbose=False)
    for p in fake.values():
        write_kit_checkpoint(p)
    runs = N.comparison_runs(resolve_profile("cpu"), verbose=False)
    assert {o: r[0] for o, r in runs.items()} == fake and "dino-gpu-phantom" in runs["dino"][1]
    # the label comes from the file's own config: a run of the `cpu` preset says so
    from radjepa_lab.presets import get_preset

    cfg = get_preset("cpu")
    write_kit_checkpoint(fake["jepa"], cfg)
    how = N.comparison_runs(resolve_profile("cpu"), verbose=False)["jepa"][1]
    assert f"--preset cpu ({cfg.steps} steps x batch {cfg.batch_size} on {cfg.n_train}" in how
    assert how.endswith("(bash bench/objectives.sh cpu)")
