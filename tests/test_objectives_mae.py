"""MAE-style reconstruction: the norm-pix targets, the loss on hidden patches only, the
reconstruction picture, and a run of the one trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import blob_images, tiny_config

from radjepa_lab.checkpoints import export_checkpoint, load_checkpoint, load_encoder, load_trained
from radjepa_lab.masks import RandomPatchMasker
from radjepa_lab.models import patchify
from radjepa_lab.objectives.mae import mae_loss, mae_targets, reconstruct
from radjepa_lab.presets import with_objective
from radjepa_lab.train import pretrain


def test_norm_pix_targets_by_hand() -> None:
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, :2, :2] = torch.tensor([[0.0, 0.2], [0.4, 0.6]])  # patch 0 (2x2 patches)
    t = mae_targets(img, 2)
    mean, var = 0.3, ((0.3**2 + 0.1**2) * 2) / 4
    want = (torch.tensor([0.0, 0.2, 0.4, 0.6]) - mean) / math.sqrt(var + 1e-6)
    torch.testing.assert_close(t[0, 0], want)
    assert torch.equal(t[0, 1], torch.zeros(4))  # a flat patch stays 0, no division by 0
    torch.testing.assert_close(mae_targets(img, 2, norm_pix=False), patchify(img, 2))


def test_loss_counts_only_the_hidden_patches() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 1, 8, 8, generator=g)
    masks = RandomPatchMasker((4, 4), 0.75).sample(2, g)
    pred = torch.randn(2, 16, 4, generator=g)
    base = mae_loss(pred, img, masks.masked, 2)
    changed = pred.clone()
    rows = torch.arange(2).view(-1, 1)
    changed[rows, masks.keep] += 100.0  # visible patches: not scored
    assert float(mae_loss(changed, img, masks.masked, 2)) == pytest.approx(float(base))
    perfect = mae_targets(img, 2)
    assert float(mae_loss(perfect, img, masks.masked, 2)) == 0.0


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory: pytest.TempPathFactory):
    cfg = with_objective(tiny_config(steps=30, ckpt_every=15, log_every=5, lr=2e-3), "mae")
    return cfg, pretrain(cfg, tmp_path_factory.mktemp("mae"), dataset=blob_images(64),
                         progress=False)


def test_a_mae_run_learns_and_has_no_teacher(mae_run) -> None:
    cfg, res = mae_run
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < 0.9 * losses[0], losses
    assert all("momentum" not in r for r in res.history)  # no EMA to log
    assert res.history[-1]["visible_tokens"] == 4 and res.history[-1]["masked_tokens"] == 12
    state = load_checkpoint(res.checkpoint)
    assert {"encoder", "mae_decoder"} <= set(state)
    assert not {"target_encoder", "predictor"} & set(state)
    assert res.evaluated is res.encoder and res.target_encoder is None


def test_reconstruction_keeps_visible_patches(mae_run) -> None:
    _, res = mae_run
    imgs = torch.stack([b["img"] for b in blob_images(3, seed=9)])
    masks = RandomPatchMasker((4, 4), 0.75).sample(3, torch.Generator().manual_seed(2))
    out = reconstruct(res.encoder, res.networks["mae_decoder"], imgs, masks)
    assert out.shape == imgs.shape
    rows = torch.arange(3).view(-1, 1)
    torch.testing.assert_close(patchify(out, 8)[rows, masks.keep],
                               patchify(imgs, 8)[rows, masks.keep])


def test_mae_checkpoints_load_and_export(mae_run, tmp_path: Path) -> None:
    _, res = mae_run
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # MAE's evaluated encoder is its only encoder
        torch.testing.assert_close(load_encoder(res.checkpoint)(x), res.encoder(x))
    small = load_trained(export_checkpoint(res.checkpoint, tmp_path / "mae.pt"))
    assert small.objective == "mae" and set(small.networks) == {"encoder", "mae_decoder"}
    with torch.no_grad():
        err = (small.evaluated(x) - res.encoder(x)).abs().max()
    assert float(err) < 5e-2  # float16 export


def test_mae_resume_gives_identical_losses(tmp_path: Path) -> None:
    cfg = with_objective(tiny_config(steps=6, ckpt_every=3, log_every=1), "mae")
    data = blob_images(32)
    full = pretrain(cfg, tmp_path / "full", dataset=data, progress=False)
    pretrain(cfg, tmp_path / "split", dataset=data, progress=False, max_steps=3)
    rest = pretrain(cfg, tmp_path / "split", dataset=data, progress=False, resume=True)
    assert [(r["step"], r["loss"]) for r in rest.history] == [
        (r["step"], r["loss"]) for r in full.history]
