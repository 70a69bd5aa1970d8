"""Trainer: loss, schedules, EMA, the JEPA networks, smoke run, resume, NaN handling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import blob_images, tiny_config

from radjepa_lab.checkpoints import load_checkpoint
from radjepa_lab.config import apply_overrides, config_from_dict
from radjepa_lab.errors import ConfigError, DataError, TrainingError
from radjepa_lab.models import build_encoder
from radjepa_lab.monitors import rankme, rankme_split
from radjepa_lab.presets import get_preset
from radjepa_lab.train import (
    JEPA,
    ema_update,
    jepa_loss,
    lr_at,
    momentum_at,
    param_groups,
    pretrain,
    wd_at,
)

# ----------------------------------------------------------------------------- pieces


def test_jepa_loss_equals_hand_computation() -> None:
    pred = torch.tensor([[[0.5, -1.0, 2.0, 0.0]]])
    target = torch.tensor([[[1.0, 2.0, 3.0, 6.0]]])
    # layer norm without affine, by hand: mean 3, biased var (4+1+0+9)/4 = 3.5
    normed = [(v - 3.0) / math.sqrt(3.5 + 1e-5) for v in (1.0, 2.0, 3.0, 6.0)]
    diffs = [abs(p - t) for p, t in zip((0.5, -1.0, 2.0, 0.0), normed, strict=True)]
    smooth = sum(0.5 * d * d if d < 1.0 else d - 0.5 for d in diffs) / 4
    l2 = sum(d * d for d in diffs) / 4
    assert jepa_loss(pred, target).item() == pytest.approx(smooth, rel=1e-6)
    assert jepa_loss(pred, target, kind="l2").item() == pytest.approx(l2, rel=1e-6)
    with pytest.raises(ConfigError):
        jepa_loss(pred, target, kind="cosine")


def test_ema_update_is_exact() -> None:
    torch.manual_seed(0)
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    m = 0.996
    ema_update(target, online, m)
    for t0, o, t1 in zip(before, online.parameters(), target.parameters(), strict=True):
        torch.testing.assert_close(t1, m * t0 + (1 - m) * o.detach(), rtol=0, atol=1e-7)
    ema_update(target, online, 1.0)  # momentum 1 freezes the target exactly
    for t1, t2 in zip([p.clone() for p in target.parameters()], target.parameters(), strict=True):
        assert torch.equal(t1, t2)
    ema_update(target, online, 0.0)  # momentum 0 copies the online weights exactly
    for o, t in zip(online.parameters(), target.parameters(), strict=True):
        assert torch.equal(o, t)


def test_schedules_follow_ijepa() -> None:
    cfg = tiny_config(steps=100, warmup=10, lr=1e-3, start_lr=1e-4, final_lr=1e-6)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(5, cfg) == pytest.approx(5.5e-4)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert lr_at(100, cfg) == pytest.approx(1e-6)
    assert wd_at(0, cfg) == pytest.approx(0.04) and wd_at(100, cfg) == pytest.approx(0.4)
    assert wd_at(50, cfg) == pytest.approx(0.22)
    assert momentum_at(0, cfg) == pytest.approx(0.996)
    assert momentum_at(50, cfg) == pytest.approx(0.998)
    assert momentum_at(100, cfg) == pytest.approx(1.0)


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


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


# ----------------------------------------------------------------------------- runs


def test_smoke_pretraining_lowers_loss_and_logs_monitors(tmp_path: Path) -> None:
    cfg = tiny_config(steps=40, warmup=4, ckpt_every=20, log_every=4, lr=2e-3)
    res = pretrain(cfg, tmp_path, dataset=blob_images(64), progress=False)
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < 0.7 * losses[0], losses
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == res.history and rows[-1]["step"] == 40
    for key in ("step", "loss", "lr", "wd", "momentum", "imgs_per_s", "rankme", "feat_std"):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert rows[-1]["momentum"] > rows[0]["momentum"]
    # the logged RankMe is RankMe of the fixed monitor batch's pooled target tokens
    from radjepa_lab.batches import cache_dataset, monitor_images

    data = blob_images(64)
    mon = monitor_images(data, cache_dataset(data, cfg), cfg)
    with torch.no_grad():
        feats = res.target_encoder(mon).mean(1)
        assert rankme(feats) == pytest.approx(rows[-1]["rankme"], rel=1e-4)
    from radjepa_lab.monitors import MONITOR_TOP_K, TAIL_KEY, TOP_SHARE_KEY

    split = rankme_split(feats, k=MONITOR_TOP_K)
    assert split["rankme_tail"] == pytest.approx(rows[-1][TAIL_KEY], rel=1e-4)
    assert split["top_share"] == pytest.approx(rows[-1][TOP_SHARE_KEY], rel=1e-4)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # must not need pickle
    assert ckpt["step"] == 40 and set(ckpt) >= {
        "encoder", "predictor", "target_encoder", "optimizer", "config", "rng", "data"}
    assert config_from_dict(ckpt["config"]) == cfg
    assert res.steps_done == 40 and res.checkpoint == tmp_path / "checkpoint.pt"
    assert not list(tmp_path.glob(".*tmp*"))


def test_resume_gives_identical_losses(tmp_path: Path) -> None:
    data = blob_images(48)
    cfg = tiny_config(steps=12, ckpt_every=6, log_every=1)
    full = pretrain(cfg, tmp_path / "full", dataset=data, progress=False)
    part = pretrain(cfg, tmp_path / "split", dataset=data, progress=False, max_steps=6)
    assert part.steps_done == 6 and load_checkpoint(part.checkpoint)["step"] == 6
    rest = pretrain(cfg, tmp_path / "split", dataset=data, progress=False, resume=True)
    a = [(r["step"], r["loss"]) for r in full.history]
    b = [(r["step"], r["loss"]) for r in rest.history]
    assert b == a  # bit-identical on CPU, including the 6 steps after the restart
    for k, v in full.target_encoder.state_dict().items():
        assert torch.equal(v, rest.target_encoder.state_dict()[k]), k


def test_phantoms_generated_on_the_fly_in_dataloader_workers(tmp_path: Path) -> None:
    from radjepa_lab.data.phantom import PhantomConfig, PhantomDataset

    cfg = tiny_config(steps=2, cache_data=False, num_workers=2, monitor_batch=4, batch_size=4)
    ds = PhantomDataset(16, seed=0, cfg=PhantomConfig(size=48))  # resized to 32 px for the model
    res = pretrain(cfg, tmp_path, dataset=ds, progress=False)
    assert [r["step"] for r in res.history] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in res.history)


class _PoisonAfter:
    """Serves clean images, then NaNs once ``clean_reads`` items have been read."""

    def __init__(self, items: list[dict], clean_reads: int) -> None:
        self.items, self.left = items, clean_reads

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        self.left -= 1
        item = dict(self.items[i])
        if self.left < 0:
            item["img"] = torch.full_like(item["img"], float("nan"))
        return item


def test_nan_loss_stops_with_training_error_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config(steps=12, ckpt_every=3, cache_data=False, monitor_batch=8)
    ds = _PoisonAfter(blob_images(16), clean_reads=8 + 5 * 8)  # monitor batch, then 5 steps
    with pytest.raises(TrainingError, match="step 5.*checkpoint"):
        pretrain(cfg, tmp_path, dataset=ds, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["encoder"].values())


def test_out_of_range_images_are_refused(tmp_path: Path) -> None:
    data = [{"img": 255.0 * d["img"]} for d in blob_images(16)]
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        pretrain(tiny_config(steps=2), tmp_path, dataset=data, progress=False)


def test_fit_to_minutes_fills_the_budget_from_timed_steps(monkeypatch) -> None:
    """The cpu profile's time budget: steps = margin x budget / measured step time, nothing
    else of the config changes, a slow machine gets the floor, None keeps the preset."""
    import radjepa_lab.objectives as O
    from radjepa_lab.budget import fit_to_minutes
    from radjepa_lab.config import RUNTIME_FIELDS, config_diff

    cfg = get_preset("cpu")
    seconds = {"per_step": 0.5}
    seen: list[tuple[int, int]] = []

    def fake_cost(c, batch_size, steps, seed):
        seen.append((batch_size, steps))  # one slow first step: the median ignores it
        return {"step_seconds": [3 * seconds["per_step"]] + [seconds["per_step"]] * (steps - 1)}

    monkeypatch.setattr(O, "step_cost", fake_cost)
    out, info = fit_to_minutes(cfg, 2.0, margin=0.85, echo=None)
    assert out.steps == int(0.85 * 120 / 0.5) == 204 and info["steps"] == 204
    assert seen == [(cfg.batch_size, 8)]  # timed at the preset's own batch
    assert cfg.steps == get_preset("cpu").steps  # the input is not changed
    changed = {k.split(".")[0] for k in config_diff(cfg, out)} - set(RUNTIME_FIELDS)
    assert changed <= {"steps", "ckpt_every"} and out.warmup == cfg.warmup
    assert out.ckpt_every <= out.steps

    seconds["per_step"] = 100.0  # a machine too slow for the budget: the warm-up plus 20 steps
    lines: list[str] = []
    out, _ = fit_to_minutes(cfg, 1.0, echo=lines.append)
    assert out.steps == cfg.warmup + 20 and "slow machine" in lines[0]

    same, info = fit_to_minutes(cfg, None)
    assert info == {} and same.steps == cfg.steps and same is not cfg
    with pytest.raises(ConfigError, match="positive number of minutes"):
        fit_to_minutes(cfg, 0.0)


def test_fit_to_minutes_times_real_steps() -> None:
    """Without a stand-in, the measured step time is this machine's and the steps follow."""
    from radjepa_lab.budget import fit_to_minutes

    cfg = tiny_config()
    cfg.device = "cpu"
    out, info = fit_to_minutes(cfg, 0.05, calib_steps=2, echo=None)
    assert info["s_per_step"] > 0
    assert out.steps == max(cfg.warmup + 20, int(0.9 * 3.0 / info["s_per_step"]))
