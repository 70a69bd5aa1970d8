"""DINO-style self-distillation: the temperature schedule, centering and sharpening, the
cross-entropy over pairs of views, the frozen prototypes, and a run of the one trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import blob_images, tiny_config

from radjepa_lab.batches import cache_dataset, monitor_images, multi_crop
from radjepa_lab.checkpoints import (
    export_checkpoint,
    load_checkpoint,
    load_encoder,
    load_jepa,
    load_trained,
)
from radjepa_lab.errors import CheckpointError
from radjepa_lab.monitors import rankme
from radjepa_lab.objectives.dino import (
    DINO,
    DINOLoss,
    dino_cross_entropy,
    teacher_probs,
    teacher_temp_at,
)
from radjepa_lab.presets import with_objective
from radjepa_lab.train import pretrain


def _cfg(**kw):
    return with_objective(tiny_config(**kw), "dino")


def test_teacher_temperature_warms_up_then_stays() -> None:
    cfg = _cfg(steps=100)
    cfg.dino.teacher_temp_warmup = 0.3
    assert teacher_temp_at(0, cfg) == pytest.approx(0.04)
    assert teacher_temp_at(15, cfg) == pytest.approx(0.055)
    assert teacher_temp_at(30, cfg) == teacher_temp_at(99, cfg) == pytest.approx(0.07)


def test_cross_entropy_skips_the_same_view_and_averages_the_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 5, generator=g) for _ in range(4)]  # 2 global + 2 local views
    teacher = [F.softmax(torch.randn(3, 5, generator=g), -1) for _ in range(2)]
    by_hand, pairs = 0.0, 0
    for i, q in enumerate(teacher):
        for v, s in enumerate(student):
            if v != i:
                by_hand += float((-(q * F.log_softmax(s / 0.1, -1)).sum(-1)).mean())
                pairs += 1
    assert pairs == 6
    assert float(dino_cross_entropy(student, teacher, 0.1)) == pytest.approx(by_hand / 6, rel=1e-6)


def test_centering_and_sharpening() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.5, 0.0]])
    center = logits.mean(0, keepdim=True)
    # one prototype wins every image until the centre removes what all images share
    assert teacher_probs(logits, torch.zeros(1, 3), 0.04).argmax(-1).tolist() == [0, 0]
    centred = teacher_probs(logits, center, 0.04)
    assert centred.argmax(-1).tolist() != [0, 0]
    # a lower temperature sharpens: lower entropy
    def entropy(p: torch.Tensor) -> float:
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())

    assert entropy(teacher_probs(logits, center, 0.04)) < entropy(teacher_probs(logits, center, 1))
    torch.testing.assert_close(centred.sum(-1), torch.ones(2))


def test_center_is_an_ema_of_the_teacher_batch_mean() -> None:
    loss = DINOLoss(3, center_momentum=0.9)
    t = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    loss.update_center(t)
    torch.testing.assert_close(loss.center, 0.1 * t.mean(0, keepdim=True))
    loss.update_center(t)
    torch.testing.assert_close(loss.center, (0.9 * 0.1 + 0.1) * t.mean(0, keepdim=True))


def test_multi_crop_views_are_seeded_and_sized() -> None:
    cfg = _cfg()
    cfg.dino.n_local = 3
    imgs = torch.stack([b["img"] for b in blob_images(4)])
    a = multi_crop(imgs, cfg, torch.Generator().manual_seed(1))
    b = multi_crop(imgs, cfg, torch.Generator().manual_seed(1))
    assert a.globals.shape == (8, 1, 32, 32) and a.locals.shape == (12, 1, 16, 16)
    assert cfg.local_px == 16 and a.n_views == 5
    assert torch.equal(a.globals, b.globals) and torch.equal(a.locals, b.locals)
    assert not torch.equal(a.globals[:4], a.globals[4:])  # two different global crops
    assert float(a.globals.min()) >= 0 and float(a.globals.max()) <= 1


def test_prototypes_stay_frozen_at_the_start() -> None:
    cfg = _cfg(steps=10)
    cfg.dino.freeze_prototypes = 0.2  # steps 0 and 1
    run = DINO(cfg, torch.device("cpu"))
    imgs = torch.stack([b["img"] for b in blob_images(8)])
    before = run.head.prototypes.detach().clone()
    w0 = run.head.mlp[0].weight.detach().clone()
    run.step(0, multi_crop(imgs, cfg, torch.Generator().manual_seed(0)), None)
    assert torch.equal(run.head.prototypes, before)
    assert not torch.equal(run.head.mlp[0].weight, w0)
    run.step(2, multi_crop(imgs, cfg, torch.Generator().manual_seed(1)), None)
    assert not torch.equal(run.head.prototypes, before)


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory: pytest.TempPathFactory):
    cfg = _cfg(steps=8, ckpt_every=4, log_every=2)
    out = tmp_path_factory.mktemp("dino")
    return cfg, pretrain(cfg, out, dataset=blob_images(48), progress=False)


def test_a_dino_run_saves_its_networks_and_monitors_the_teacher(dino_run) -> None:
    cfg, res = dino_run
    rows = res.history
    assert [r["step"] for r in rows] == [1, 2, 4, 6, 8]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["views"] == 2 + cfg.dino.n_local
        assert 0 < r["teacher_entropy"] <= r["teacher_entropy_max"] + 1e-4
    state = load_checkpoint(res.checkpoint)
    assert {"encoder", "dino_head", "target_encoder", "target_dino_head", "dino_loss"} <= set(state)
    assert "predictor" not in state and state["config"]["objective"] == "dino"
    assert res.evaluated is res.target_encoder is res.networks["target_encoder"]
    data = blob_images(48)
    mon = monitor_images(data, cache_dataset(data, cfg), cfg)
    with torch.no_grad():  # the logged RankMe is the teacher's
        assert rankme(res.target_encoder(mon).mean(1)) == pytest.approx(rows[-1]["rankme"], rel=1e-4)
        # the teacher is an EMA of the student: close to it, not equal
        x = mon[:4]
        gap = (res.target_encoder(x) - res.encoder(x)).abs().max()
    assert 0 < float(gap) < 1.0


def test_dino_resume_gives_identical_losses(tmp_path: Path) -> None:
    cfg = _cfg(steps=6, ckpt_every=3, log_every=1)
    data = blob_images(32)
    full = pretrain(cfg, tmp_path / "full", dataset=data, progress=False)
    pretrain(cfg, tmp_path / "split", dataset=data, progress=False, max_steps=3)
    rest = pretrain(cfg, tmp_path / "split", dataset=data, progress=False, resume=True)
    assert [(r["step"], r["loss"]) for r in rest.history] == [
        (r["step"], r["loss"]) for r in full.history]
    torch.testing.assert_close(rest.networks["dino_loss"].center, full.networks["dino_loss"].center,
                               rtol=0, atol=0)


def test_dino_checkpoints_load_and_export(dino_run, tmp_path: Path) -> None:
    cfg, res = dino_run
    run = load_trained(res.checkpoint)
    assert run.objective == "dino" and run.evaluated is run.networks["target_encoder"]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(res.checkpoint)(x), res.target_encoder(x))
        torch.testing.assert_close(load_encoder(res.checkpoint, which="context")(x), res.encoder(x))
    with pytest.raises(CheckpointError, match="DINO checkpoint.*load_trained"):
        load_jepa(res.checkpoint)
    small = export_checkpoint(res.checkpoint, tmp_path / "dino.pt")
    state = load_checkpoint(small)
    assert set(state) >= {"target_encoder", "target_dino_head"}
    assert not {"encoder", "dino_head", "dino_loss", "optimizer"} & set(state)
    assert (tmp_path / "dino.metrics.jsonl").read_text() == (
        res.checkpoint.parent / "metrics.jsonl").read_text()
    exported = load_trained(small)
    assert set(exported.networks) == {"target_encoder", "target_dino_head"}
    with pytest.raises(CheckpointError, match="which='target'"):
        load_encoder(small, which="context")
