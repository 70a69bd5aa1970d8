"""MAE-style pixel reconstruction (He et al. 2022), in the one trainer of :mod:`radjepa_lab.train`.

Read top to bottom, this is one training step of MAE:

1. per image, a random 75 % of the patches are hidden (:class:`radjepa_lab.masks.RandomPatchMasker`,
   drawn from the step's seeded generator like I-JEPA's blocks);
2. the **encoder** sees only the visible patches (the kit encoder's masked forward, as
   I-JEPA's context encoder);
3. a light **decoder** (:class:`radjepa_lab.models.MAEDecoder`, the predictor's width and
   depth) puts a mask token at every hidden patch and predicts every patch's pixels;
4. the loss is the mean squared error on the hidden patches only, against their pixels
   normalised per patch (mean 0, std 1: MAE's ``norm_pix_loss``); AdamW step. There is no
   teacher and no EMA: pixels cannot collapse, and the encoder itself is what is evaluated.

The contrast with I-JEPA is the target: I-JEPA predicts the *features* a teacher gives the
hidden blocks, MAE their *pixels*, so MAE must spend capacity on texture and noise a feature
target lets the encoder ignore.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from radjepa_lab import distributed as D
from radjepa_lab.batches import h2d
from radjepa_lab.config import TrainConfig
from radjepa_lab.masks import PatchMasks, RandomPatchMasker
from radjepa_lab.models import (
    MAEDecoder,
    VisionTransformer,
    apply_masks,
    build_encoder,
    build_mae_decoder,
    patchify,
)
from radjepa_lab.train import Objective

__all__ = ["MAE", "mae_loss", "mae_targets", "reconstruct"]


def mae_targets(imgs: torch.Tensor, patch: int, norm_pix: bool = True,
                eps: float = 1e-6) -> torch.Tensor:
    """Every patch's pixels [B, N, p*p*C], normalised per patch when ``norm_pix`` (MAE's
    ``(x - mean) / sqrt(var + 1e-6)`` with the biased variance)."""
    t = patchify(imgs.float(), patch)
    if norm_pix:
        mean, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True, unbiased=False)
        t = (t - mean) / (var + eps).sqrt()
    return t


def mae_loss(pred: torch.Tensor, imgs: torch.Tensor, masked: torch.Tensor, patch: int,
             norm_pix: bool = True) -> torch.Tensor:
    """MSE between predicted and target pixels of the hidden patches only.

    pred [B, N, p*p*C] (the decoder's output for every patch), imgs [B, C, H, W] in [0, 1],
    masked [B, M] indices of the hidden patches."""
    target = apply_masks(mae_targets(imgs, patch, norm_pix), masked)
    return F.mse_loss(apply_masks(pred.float(), masked), target)


class _MAENet(nn.Module):
    """Encoder on the visible patches + decoder: the part that gets gradients (and DDP)."""

    def __init__(self, encoder: VisionTransformer, decoder: MAEDecoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, imgs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(imgs, keep), keep)


@torch.no_grad()
def reconstruct(encoder: VisionTransformer, decoder: MAEDecoder, imgs: torch.Tensor,
                masks: PatchMasks, norm_pix: bool = True) -> torch.Tensor:
    """What MAE sees and fills in, as images [B, C, H, W] in [0, 1]: visible patches as they are,
    hidden ones from the decoder (un-normalised with each hidden patch's own mean and std
    when ``norm_pix``, as MAE's visualisation does)."""
    p = encoder.patch_size
    pred = decoder(encoder(imgs, masks.keep), masks.keep).float()
    pix = patchify(imgs.float(), p)
    if norm_pix:
        mean, var = pix.mean(-1, keepdim=True), pix.var(-1, keepdim=True, unbiased=False)
        pred = pred * (var + 1e-6).sqrt() + mean
    rows = torch.arange(len(imgs)).view(-1, 1)
    out = pix.clone()
    out[rows, masks.masked] = pred[rows, masks.masked]
    b, c, h, w = imgs.shape
    gh, gw = h // p, w // p
    out = out.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
    return out.clamp(0, 1)


class MAE(Objective):
    """The encoder, MAE's decoder and the loss of one step (no teacher, no EMA)."""

    name, title = "mae", "MAE"

    def __init__(self, cfg: TrainConfig, device: torch.device,
                 info: D.DistInfo | None = None) -> None:
        super().__init__(cfg, device, info)
        self.encoder = build_encoder(cfg.model, init=cfg.model.encoder_init, seed=cfg.seed)
        self.decoder = build_mae_decoder(cfg.model, seed=cfg.seed)
        self._setup(_MAENet(self.encoder, self.decoder))
        self.networks = {"encoder": self.encoder, "mae_decoder": self.decoder}
        self.evaluated = self.encoder

    def sampler(self) -> RandomPatchMasker:
        return RandomPatchMasker(self.cfg.model.grid, self.cfg.mae.mask_ratio)

    def loss(self, step: int, imgs: torch.Tensor, masks: PatchMasks) -> torch.Tensor:
        keep, masked = h2d(masks.keep, self.device), h2d(masks.masked, self.device)
        pred = self.model(imgs, keep)
        return mae_loss(pred, imgs, masked, self.cfg.model.patch_size, self.cfg.mae.norm_pix)

    def log_fields(self, imgs: Any, masks: PatchMasks) -> dict[str, Any]:
        return {"visible_tokens": int(masks.keep.shape[1]),
                "masked_tokens": int(masks.masked.shape[1])}
