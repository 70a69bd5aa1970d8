"""Trainer: loss, schedules, EMA, monitors, smoke run, resume, NaN handling, presets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from train_fixtures import blob_images, tiny_config

from radjepa_lab.config import (
    PRESETS,
    config_from_dict,
    config_to_dict,
    get_preset,
    resolve_profile,
)
from radjepa_lab.errors import CheckpointError, ConfigError, DataError, TrainingError
from radjepa_lab.masks import MultiBlockMaskSampler
from radjepa_lab.train import (
    StepBatchSampler,
    ema_update,
    feature_std,
    jepa_loss,
    load_checkpoint,
    lr_at,
    momentum_at,
    param_groups,
    pretrain,
    rankme,
    rankme_dipped,
    rankme_split,
    save_checkpoint,
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


def test_collapse_monitors() -> None:
    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(512, 16, generator=g)
    collapsed = torch.randn(512, 1, generator=g) * torch.ones(1, 16) + 3.0
    assert rankme(healthy) > 14 and rankme(collapsed) < 1.5
    assert rankme(torch.eye(8), center=False) == pytest.approx(8.0, rel=1e-4)
    assert feature_std(healthy) == pytest.approx(1 / math.sqrt(16), rel=0.1)
    assert feature_std(torch.ones(64, 16)) < 1e-6


def test_batch_sampler_is_a_function_of_the_step() -> None:
    s = StepBatchSampler(10, 4, seed=1, start_step=0, steps=10)
    stream = torch.cat([s.batch(i) for i in range(5)])  # 20 positions = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:].tolist()) == list(range(10))
    resumed = StepBatchSampler(10, 4, seed=1, start_step=3, steps=10)
    assert torch.equal(resumed.batch(3), s.batch(3))
    r0 = StepBatchSampler(10, 4, seed=1, start_step=0, steps=10, rank=0, world_size=2)
    r1 = StepBatchSampler(10, 4, seed=1, start_step=0, steps=10, rank=1, world_size=2)
    assert torch.equal(torch.cat([r0.batch(2), r1.batch(2)]), s.batch(2))


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
    from radjepa_lab.train import _cache, _monitor_images

    data = blob_images(64)
    mon = _monitor_images(data, _cache(data, cfg), cfg)
    with torch.no_grad():
        feats = res.target_encoder(mon).mean(1)
        assert rankme(feats) == pytest.approx(rows[-1]["rankme"], rel=1e-4)
    from radjepa_lab.train import MONITOR_TOP_K, TAIL_KEY, TOP_SHARE_KEY

    split = rankme_split(feats, k=MONITOR_TOP_K)
    assert split["rankme_tail"] == pytest.approx(rows[-1][TAIL_KEY], rel=1e-4)
    assert split["top_share"] == pytest.approx(rows[-1][TOP_SHARE_KEY], rel=1e-4)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # must not need pickle
    assert ckpt["step"] == 40 and set(ckpt) >= {
        "encoder", "predictor", "target_encoder", "optimizer", "config", "rng", "data"}
    assert config_from_dict(ckpt["config"]) == cfg
    assert res.steps_done == 40 and res.checkpoint == tmp_path / "checkpoint.pt"
    assert not list(tmp_path.glob(".*tmp*"))


def test_rankme_dip_is_any_log_below_the_first() -> None:
    # issue 4's "does not fall below its init value", read strictly
    assert rankme_dipped(40.0, 39.9)
    assert not rankme_dipped(40.0, 40.0)
    assert not rankme_dipped(40.0, 52.6)


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


def test_checkpoint_io(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"format": "radjepa_lab", "step": 1})
    assert load_checkpoint(path)["step"] == 1
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a RadJEPA Lab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "broken.pt")


# ----------------------------------------------------------------------------- presets


def test_presets_and_serialisation() -> None:
    assert {"smoke", "cpu", "gpu-short", "radjepa-b14"} <= set(PRESETS)
    for name in PRESETS:
        cfg = get_preset(name)
        assert config_from_dict(config_to_dict(cfg)) == cfg
        grid = cfg.model.grid
        MultiBlockMaskSampler(grid, cfg.masks).sample(4, torch.Generator().manual_seed(0))
    b14 = get_preset("radjepa-b14")
    assert (b14.model.patch_size, b14.model.embed_dim, b14.model.pred_embed_dim,
            b14.model.pred_depth) == (14, 768, 384, 6)
    assert (b14.wd, b14.ema) == ((0.04, 0.4), (0.996, 1.0))
    assert get_preset("gpu-short").model.patch_size == 16
    assert get_preset("cpu-p8").masks.min_keep >= 26  # no context starvation on an 8x8 grid
    # the 3-minute preset's EMA time constant 1/(1-m) must sit well inside the run, or the
    # evaluated target encoder stays near its random init (README "Learning signal")
    cpu = get_preset("cpu")
    assert 1.0 / (1.0 - cpu.ema[0]) <= cpu.steps / 4
    mb = MultiBlockMaskSampler(cpu.model.grid, cpu.masks).sample(64, torch.Generator().manual_seed(0))
    assert mb.context.shape[1] >= cpu.masks.min_keep >= cpu.model.grid[0] * cpu.model.grid[1] // 3
    with pytest.raises(ConfigError, match="Unknown preset"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict({**config_to_dict(get_preset("cpu")), "colour": 1})


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
