"""The contrasting objectives of notebook 09, in the one trainer of :mod:`radjepa_lab.train`.

``TrainConfig.objective`` picks what the trainer optimises; everything else (the encoder, the
step stream of :mod:`radjepa_lab.batches`, the LR / weight-decay / EMA schedules, checkpoints,
collapse monitors, DDP, resume and Ctrl-C) is shared:

* ``jepa``: I-JEPA, latent prediction of masked blocks (:class:`radjepa_lab.train.JEPA`);
* ``dino``: DINO-style self-distillation between crops (:mod:`.dino`, the Rad-DINO recipe);
* ``mae``: MAE-style reconstruction of masked pixels (:mod:`.mae`).

:func:`step_cost` measures what one step of each costs (FLOPs per image and seconds per step),
for the "same budget" column of the comparison.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from radjepa_lab.config import TrainConfig
from radjepa_lab.objectives.dino import DINO
from radjepa_lab.objectives.mae import MAE

__all__ = ["OBJECTIVE_CLASSES", "step_cost"]

OBJECTIVE_CLASSES = {"dino": DINO, "mae": MAE}


def step_cost(cfg: TrainConfig, batch_size: int = 8, steps: int = 2,
              seed: int = 0) -> dict[str, Any]:
    """One objective's training step, measured on random images of the model's size.

    Returns ``flops_per_image`` (forward + backward, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on the first step; matrix products and
    attention, as MFU counts do), ``s_per_image`` (wall clock of the next ``steps`` steps,
    this machine, divided by the images), each of those steps' seconds (``step_seconds``) and
    the batch used. Runs on CPU with ``cfg``'s objective, encoder and step stream; nothing is
    written.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from radjepa_lab.batches import _augment, step_masks
    from radjepa_lab.train import build_objective

    device = torch.device("cpu")
    run = build_objective(cfg, device)
    sampler = run.sampler()
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    imgs = torch.rand(batch_size, m.in_chans, m.img_size, m.img_size, generator=g)

    def one(step: int) -> None:
        views = _augment(imgs, cfg, step, 0)
        run.step(step, views, step_masks(sampler, batch_size, cfg.seed, step, 0))

    with FlopCounterMode(display=False) as counter:
        one(0)
    each = []
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        one(i)
        each.append(time.perf_counter() - t0)
    seconds = sum(each) / steps
    return {"objective": cfg.objective, "flops_per_image": counter.get_total_flops() / batch_size,
            "s_per_image": seconds / batch_size, "batch_size": batch_size, "step_seconds": each}
