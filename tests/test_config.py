"""Config dataclasses: (de)serialisation, command-line overrides, validation before training."""

from __future__ import annotations

import pytest
from helpers import tiny_config

from radjepa_lab.config import (
    LEGACY_TRAIN_KEYS,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    with_steps,
)
from radjepa_lab.errors import ConfigError
from radjepa_lab.presets import get_preset


def test_unknown_fields_are_refused_when_reading_a_config() -> None:
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict({**config_to_dict(get_preset("cpu")), "colour": 1})
    bad_model = config_to_dict(get_preset("cpu"))
    bad_model["model"]["colour"] = 1
    with pytest.raises(ConfigError, match="config.model: unknown field"):
        config_from_dict(bad_model)


def test_legacy_keys_of_older_checkpoints_are_dropped() -> None:
    # TrainConfig once stored expected_minutes and description (now presets.PRESETS); older
    # checkpoints, such as the shipped one, still carry them
    cfg = tiny_config()
    d = config_to_dict(cfg)
    assert not set(LEGACY_TRAIN_KEYS) & set(d)
    assert config_from_dict({**d, "expected_minutes": 3.0, "description": "old run"}) == cfg


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


def test_with_steps_caps_warmup_and_keeps_longer_runs() -> None:
    assert get_preset("cpu").warmup > 10
    short = with_steps(get_preset("cpu"), 10)
    assert (short.steps, short.warmup) == (10, 10)
    long = with_steps(get_preset("cpu"), 1000)
    assert (long.steps, long.warmup) == (1000, get_preset("cpu").warmup)
    assert with_steps(get_preset("cpu"), None).steps == get_preset("cpu").steps


def test_bf16_auto_follows_the_hardware(monkeypatch) -> None:
    import torch

    from radjepa_lab.config import TrainConfig, native_bf16, use_bf16

    cfg = TrainConfig(bf16="auto")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not native_bf16("cpu") and not use_bf16(cfg, "cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert native_bf16("cpu") and use_bf16(cfg, "cpu")
    assert use_bf16(TrainConfig(bf16=True), "cpu") and not use_bf16(TrainConfig(), "cpu")
    with pytest.raises(ConfigError, match="bf16"):
        TrainConfig(bf16="sometimes")


def test_objective_knobs_are_checked_and_old_configs_read() -> None:
    from radjepa_lab.config import OBJECTIVES

    assert OBJECTIVES == ("jepa", "dino", "mae")
    with pytest.raises(ConfigError, match="objective"):
        apply_overrides(tiny_config(), ["objective='simclr'"])
    with pytest.raises(ConfigError, match="mask_ratio"):
        apply_overrides(tiny_config(), ["mae.mask_ratio=1.0"])
    with pytest.raises(ConfigError, match="local_size"):
        apply_overrides(tiny_config(), ["dino.local_size=12"])  # not a multiple of 8
    with pytest.raises(ConfigError, match="local_scale"):
        apply_overrides(tiny_config(), ["dino.local_scale=(0.4, 0.1)"])
    cfg = apply_overrides(tiny_config(), ["objective='dino'", "dino.n_local=2"])
    assert cfg.objective == "dino" and cfg.dino.n_local == 2 and cfg.local_px == 16
    # a checkpoint written before issue 21 has no objective, dino or mae entries
    old = config_to_dict(tiny_config())
    for key in ("objective", "dino", "mae"):
        old.pop(key)
    assert config_from_dict(old) == tiny_config()
