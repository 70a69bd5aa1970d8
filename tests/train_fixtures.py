"""Tiny deterministic images for trainer tests (the phantom generator is tested elsewhere)."""

from __future__ import annotations

import torch

from radjepa_lab.config import MaskConfig, ModelConfig, TrainConfig


def blob_images(n: int, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Gaussian blobs at random places on a vertical gradient: content varies per image,
    so the predictor has something to learn beyond positions."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    c = torch.rand(n, 2, 1, 1, generator=g)
    r = 0.08 + 0.15 * torch.rand(n, 1, 1, generator=g)
    blob = torch.exp(-((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2) / (2 * r**2))
    img = (0.2 + 0.3 * yy + 0.5 * blob).clamp(0, 1)
    return [{"img": img[i : i + 1], "idx": i} for i in range(n)]


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        model=ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                          pred_embed_dim=16, pred_depth=1, pred_num_heads=2),
        masks=MaskConfig(min_keep=4), steps=12, batch_size=8, lr=1e-3, start_lr=1e-4,
        warmup=2, n_train=64, log_every=1, ckpt_every=6, monitor_batch=16,
    )
    base.update(kw)
    return TrainConfig(**base)
