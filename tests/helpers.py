"""Plain helpers shared by the unit tests (``from helpers import ...``; fixtures are in conftest.py).

``tiny_model`` is the tests' one tiny network: build it here rather than spelling out another
``ModelConfig(...)``, unless a test needs a different size on purpose.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from radjepa_lab.config import MaskConfig, ModelConfig, TrainConfig, config_to_dict

TINY_MODEL = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                  pred_embed_dim=16, pred_depth=1, pred_num_heads=2)


def tiny_model(**overrides) -> ModelConfig:
    """A fresh ViT d32x2 p8 @32 px (a 4x4 patch grid) with a d16x1 predictor."""
    return ModelConfig(**{**TINY_MODEL, **overrides})


def tiny_config(**kw) -> TrainConfig:
    """A seconds-long pretraining run of :func:`tiny_model` (use with :func:`blob_images`)."""
    base = dict(
        model=tiny_model(), masks=MaskConfig(min_keep=4), steps=12, batch_size=8, lr=1e-3,
        start_lr=1e-4, warmup=2, n_train=64, log_every=1, ckpt_every=6, monitor_batch=16,
    )
    base.update(kw)
    return TrainConfig(**base)


def blob_images(n: int, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Gaussian blobs at random places on a vertical gradient: content varies per image,
    so the predictor has something to learn beyond positions (the phantom generator is
    tested on its own)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    c = torch.rand(n, 2, 1, 1, generator=g)
    r = 0.08 + 0.15 * torch.rand(n, 1, 1, generator=g)
    blob = torch.exp(-((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2) / (2 * r**2))
    img = (0.2 + 0.3 * yy + 0.5 * blob).clamp(0, 1)
    return [{"img": img[i : i + 1], "idx": i} for i in range(n)]


def write_kit_checkpoint(path: Path, cfg: TrainConfig | None = None, step: int = 0,
                         seed: int = 0) -> Path:
    """An untrained kit checkpoint of ``cfg`` (default :func:`tiny_config`): encoder, an
    identical target encoder and a predictor, all initialised from ``seed``."""
    from radjepa_lab.checkpoints import CKPT_FORMAT, CKPT_VERSION, save_checkpoint
    from radjepa_lab.models import build_encoder, build_predictor

    cfg = cfg or tiny_config()
    enc = build_encoder(cfg.model, seed=seed)
    return save_checkpoint(path, {
        "format": CKPT_FORMAT, "version": CKPT_VERSION, "step": step,
        "config": config_to_dict(cfg), "encoder": enc.state_dict(),
        "target_encoder": copy.deepcopy(enc).state_dict(),
        "predictor": build_predictor(cfg.model, seed=seed).state_dict(),
    })


def write_png(path: Path, arr: np.ndarray) -> Path:
    """Save ``arr`` (uint8 or uint16, gray or RGB) as a PNG with known pixel values."""
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")
    return path
