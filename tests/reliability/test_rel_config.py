"""Bad configs (corpus.BAD_CONFIGS) are refused before anything runs, with a ConfigError naming
the field: from the command line (one line, exit 2), from Python (a field changed by hand, then
pretrain) and from a checkpoint whose stored config was edited (CheckpointError naming file and
field). NaN/Inf and booleans-as-numbers count as bad values too."""

from __future__ import annotations

import ast
import copy
import math
import re
from pathlib import Path

import pytest
from corpus import BAD_CONFIGS

from radjepa_lab.checkpoints import load_checkpoint, load_jepa, save_checkpoint
from radjepa_lab.cli import main
from radjepa_lab.config import TrainConfig, apply_overrides, config_to_dict
from radjepa_lab.errors import CheckpointError, ConfigError
from radjepa_lab.presets import get_preset
from radjepa_lab.train import pretrain

IDS = [item for item, _ in BAD_CONFIGS]


@pytest.mark.parametrize("item, field", BAD_CONFIGS, ids=IDS)
def test_bad_config_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                          item: str, field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        apply_overrides(get_preset("smoke"), [item])
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(out), "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("radjepa-lab pretrain: error: ") and field.split(".")[1] in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before the run folder was made


def _parsed(item: str) -> tuple[list[str], str, object]:
    """``"model.depth=3"`` -> (["model"], "depth", 3), parsed as ``--set`` parses it."""
    key, _, raw = item.partition("=")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    *path, name = key.split(".")
    return path, name, value


def _set(cfg: TrainConfig, item: str) -> None:
    """Set the field of ``item`` WITHOUT validation (as Python code mutating a config does)."""
    path, name, value = _parsed(item)
    obj = cfg
    for part in path:
        obj = getattr(obj, part)
    object.__setattr__(obj, name, value)


@pytest.mark.parametrize("item, field", BAD_CONFIGS, ids=IDS)
def test_bad_config_set_in_python_is_refused_by_pretrain(tmp_path: Path, item: str,
                                                         field: str) -> None:
    cfg = get_preset("smoke")
    _set(cfg, item)
    with pytest.raises(ConfigError, match=re.escape(field)):
        pretrain(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["lr", "final_lr", "smooth_l1_beta"])
def test_non_finite_floats_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"TrainConfig.{field}=.*finite|must be"):
        TrainConfig(**{field: value})


def test_booleans_are_not_numbers_and_numbers_are_not_booleans() -> None:
    with pytest.raises(ConfigError, match="TrainConfig.steps=True"):
        TrainConfig(steps=True)
    with pytest.raises(ConfigError, match="TrainConfig.compile=0"):
        TrainConfig(compile=0)


@pytest.fixture(scope="module")
def kit_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import write_kit_checkpoint

    return write_kit_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")


@pytest.mark.parametrize("item, field", BAD_CONFIGS, ids=IDS)
def test_bad_config_stored_in_a_checkpoint(tmp_path: Path, kit_checkpoint: Path, item: str,
                                           field: str) -> None:
    state = copy.deepcopy(load_checkpoint(kit_checkpoint))
    path, name, value = _parsed(item)
    target = state["config"]
    for part in path:
        target = target[part]
    target[name] = list(value) if isinstance(value, tuple) else value
    bad = save_checkpoint(tmp_path / "edited.pt", state)
    with pytest.raises(CheckpointError) as info:
        load_jepa(bad)
    msg = str(info.value)
    assert str(bad) in msg and field in msg, msg


def test_config_checks_normalise_what_they_accept() -> None:
    cfg = apply_overrides(get_preset("smoke"), ["lr=1", "betas=[0.5, 0.9]"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.betas == (0.5, 0.9)
    assert config_to_dict(cfg)["betas"] == [0.5, 0.9]
