"""Command-line config overrides: every knob reachable, every bad value caught before training."""

from __future__ import annotations

import pytest
import torch

from radjepa_lab.cli import PRESET_HELP, apply_overrides, with_steps
from radjepa_lab.config import PRESETS, get_preset
from radjepa_lab.errors import ConfigError
from radjepa_lab.models import build_encoder
from radjepa_lab.train import JEPA


def test_nested_overrides_parse_literals() -> None:
    cfg = apply_overrides(get_preset("smoke"),
                          ["lr=2e-4", "ema=(0.99, 1.0)", "model.encoder_init='torch_default'",
                           "masks.pred_scale=[0.1, 0.2]"])
    assert cfg.lr == 2e-4
    assert cfg.ema == (0.99, 1.0)
    assert cfg.model.encoder_init == "torch_default"
    assert cfg.masks.pred_scale == (0.1, 0.2)


@pytest.mark.parametrize("item, field", [
    ("model.patch_init=bogus", "patch_init"),
    ("model.encoder_init=bogus", "encoder_init"),
    ("model.patch_size=7", "patch_size"),
    ("warmup=10000", "warmup"),
])
def test_invalid_nested_value_fails_at_parse_time(item: str, field: str) -> None:
    # nested sections are re-validated, not only the top-level TrainConfig
    with pytest.raises(ConfigError, match=field):
        apply_overrides(get_preset("cpu"), [item])


def test_unknown_field_and_missing_equals_are_named() -> None:
    with pytest.raises(ConfigError, match="no field 'lrr'"):
        apply_overrides(get_preset("cpu"), ["lrr=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(get_preset("cpu"), ["lr"])


def test_preset_help_names_every_preset() -> None:
    assert PRESET_HELP.split(" | ") == list(PRESETS)


def test_with_steps_caps_warmup_and_keeps_longer_runs() -> None:
    short = with_steps(get_preset("cpu"), 10)  # cpu warmup (250) > 10
    assert (short.steps, short.warmup) == (10, 10)
    long = with_steps(get_preset("cpu"), 1000)
    assert (long.steps, long.warmup) == (1000, get_preset("cpu").warmup)
    assert with_steps(get_preset("cpu"), None).steps == get_preset("cpu").steps


def test_encoder_init_reaches_the_trainer() -> None:
    cfg = apply_overrides(get_preset("smoke"), ["model.encoder_init='torch_default'"])
    jepa = JEPA(cfg, torch.device("cpu"))
    ref = build_encoder(cfg.model, init="torch_default", seed=cfg.seed).state_dict()
    kit = build_encoder(cfg.model, init="kit", seed=cfg.seed).state_dict()
    got = jepa.encoder.state_dict()
    w = "blocks.0.attn.qkv.weight"
    assert torch.equal(got[w], ref[w])
    assert not torch.equal(got[w], kit[w])
    # the EMA target starts as an exact copy of the context encoder
    assert torch.equal(jepa.target.state_dict()[w], got[w])
