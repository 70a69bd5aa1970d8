"""Named presets, notebook profiles and what the CLI says about them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from radjepa_lab.cli import build_parser
from radjepa_lab.config import config_from_dict, config_to_dict
from radjepa_lab.errors import ConfigError
from radjepa_lab.masks import MultiBlockMaskSampler
from radjepa_lab.presets import PRESETS, PROFILE_TABLE, get_preset, resolve_profile

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_presets_and_serialisation() -> None:
    assert {"smoke", "cpu", "gpu-short", "radjepa-b14"} <= set(PRESETS)
    for name in PRESETS:
        cfg = get_preset(name)
        assert config_from_dict(config_to_dict(cfg)) == cfg
        grid = cfg.model.grid
        MultiBlockMaskSampler(grid, cfg.masks).sample(4, torch.Generator().manual_seed(0))
        assert PRESETS[name].description and PRESETS[name].minutes
    b14 = get_preset("radjepa-b14")
    assert (b14.model.patch_size, b14.model.embed_dim, b14.model.pred_embed_dim,
            b14.model.pred_depth) == (14, 768, 384, 6)
    assert (b14.wd, b14.ema) == ((0.04, 0.4), (0.996, 1.0))
    assert get_preset("gpu-short").model.patch_size == 16
    assert get_preset("cpu-p8").masks.min_keep >= 26  # no context starvation on an 8x8 grid
    # the cpu preset's EMA time constant 1/(1-m) must sit well inside the run, or the
    # evaluated target encoder stays near its random init (bench/RESULTS.md)
    cpu = get_preset("cpu")
    assert 1.0 / (1.0 - cpu.ema[0]) <= cpu.steps / 2
    # and its grid stays legible for notebooks 01-08: at least 8x8 tokens
    assert min(cpu.model.grid) >= 8
    mb = MultiBlockMaskSampler(cpu.model.grid, cpu.masks).sample(64, torch.Generator().manual_seed(0))
    assert mb.context.shape[1] >= cpu.masks.min_keep >= cpu.model.grid[0] * cpu.model.grid[1] // 3
    with pytest.raises(ConfigError, match="Unknown preset"):
        get_preset("huge")


def test_get_preset_returns_a_fresh_config() -> None:
    a = get_preset("smoke")
    a.steps, a.model.depth = 1, 99
    assert get_preset("smoke").steps != 1 and get_preset("smoke").model.depth != 99


def test_resolve_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADJEPA_LAB_PROFILE", "smoke")
    p = resolve_profile()
    assert (p.name, p.preset) == ("smoke", "smoke") and p.expected_minutes < 1
    assert "smoke" in p.describe() and p.config.steps == get_preset("smoke").steps
    monkeypatch.setenv("RADJEPA_LAB_PROFILE", "auto")
    expected = "gpu-short" if torch.cuda.is_available() else "cpu"
    assert resolve_profile().preset == expected
    assert resolve_profile("cpu").device in ("cpu", "cuda")
    monkeypatch.setenv("RADJEPA_LAB_PROFILE", "fast")
    with pytest.raises(ConfigError, match="RADJEPA_LAB_PROFILE"):
        resolve_profile()


def test_sizes_grow_with_the_profile() -> None:
    smoke, cpu = resolve_profile("smoke").sizes, resolve_profile("cpu").sizes
    assert smoke.n_train < cpu.n_train and smoke.n_resamples < cpu.n_resamples
    assert smoke.projection in ("umap", "pca")
    assert resolve_profile("smoke").probe.n_train < resolve_profile("cpu").probe.n_train


def test_every_notebook_has_an_expected_time_in_every_profile() -> None:
    stems = {p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")}
    assert "03_pretraining" in stems
    for name, row in PROFILE_TABLE.items():
        assert stems <= set(row.notebook_minutes), name
    smoke = resolve_profile("smoke")
    table = PROFILE_TABLE["smoke"].notebook_minutes
    assert smoke.notebook_minutes("03_pretraining") == table["03_pretraining"]
    assert smoke.notebook_minutes("ex3_jepa_loss") == table["exercise"]  # one time for exercises
    assert smoke.notebook_minutes("99_unknown") is None


def test_preset_help_names_every_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would otherwise wrap inside "gpu-phantom:"
    sub = build_parser()._subparsers._group_actions[0].choices["pretrain"]
    text = " ".join(sub.format_help().split())
    assert all(f"{name}:" in text for name in PRESETS)


def test_cli_config_and_presets_import_no_torch() -> None:
    """`radjepa-lab --help` must be instant: parsing touches config and presets, never torch."""
    code = (
        "import sys\n"
        "import radjepa_lab.cli, radjepa_lab.config, radjepa_lab.presets\n"
        "radjepa_lab.cli.build_parser().format_help()\n"
        "radjepa_lab.presets.get_preset('smoke')\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert 'torch' not in sys.modules, loaded\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_cpu_profile_fits_its_steps_to_a_time_budget() -> None:
    """The demo's and notebook 03's run on a CPU: as many steps as fit CPU_BUDGET_MINUTES."""
    from radjepa_lab.presets import CPU_BUDGET_MINUTES

    cpu = resolve_profile("cpu")
    if cpu.device == "cpu":
        assert cpu.budget_minutes == CPU_BUDGET_MINUTES == 5.0
        assert f"fit {CPU_BUDGET_MINUTES:g} min" in cpu.describe()
    else:  # a GPU runs the preset's own steps
        assert cpu.budget_minutes is None
    assert resolve_profile("smoke").budget_minutes is None
