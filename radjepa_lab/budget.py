"""The time budget of a CPU run: as many training steps as fit N minutes of this machine.

The ``cpu`` profile (the demo, notebook 03) calls :func:`fit_to_minutes` before it pretrains;
``radjepa-lab demo --minutes M`` and ``bench/quality.py --minutes M`` set the budget.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

from radjepa_lab.config import TrainConfig, resolve_device, with_steps
from radjepa_lab.errors import ConfigError

__all__ = ["fit_to_minutes"]


def fit_to_minutes(cfg: TrainConfig, minutes: float | None, *, calib_steps: int = 8,
                   margin: float = 0.9, echo: Callable[[str], None] | None = print,
                   ) -> tuple[TrainConfig, dict[str, Any]]:
    """A copy of ``cfg`` whose ``steps`` fill ``minutes`` of pretraining on this machine's CPU.

    Why: on a CPU, images seen are what a short run learns from (bench/RESULTS.md), and CPUs
    differ several-fold (2 cores of one machine here ran the same step 1.9x faster than of
    another), so a fixed step count is either too short for a fast machine or too long for a
    slow one. This times ``calib_steps`` real training steps of ``cfg`` (its batch, precision
    and objective, on random images; :func:`~radjepa_lab.objectives.step_cost`), takes the
    median (the first steps of a fresh process run slower, up to 1.5x, while the kernels for
    each new shape are set up) and sets ``steps`` to what fits ``margin`` of the budget (the
    rest pays for start-up, monitors and checkpoints), at least ``warmup + 20``. Everything else, warm-up included, stays ``cfg``'s;
    the returned config is an ordinary one, so ``--steps N`` of the same preset repeats the run
    exactly. ``minutes=None`` returns ``cfg`` unchanged. The second value says what was
    measured (``s_per_step``, ``steps``, ``minutes``, ``preset_steps``).
    """
    from radjepa_lab.objectives import step_cost

    out = copy.deepcopy(cfg)
    if minutes is None:
        return out, {}
    if not minutes > 0:
        raise ConfigError(f"fit_to_minutes(minutes={minutes!r}): give a positive number of "
                          "minutes, or None for the preset's own steps.")
    if resolve_device(cfg.device).type != "cpu":
        raise ConfigError("fit_to_minutes times CPU steps; on a GPU use the preset's steps.")
    cost = step_cost(cfg, batch_size=cfg.batch_size, steps=calib_steps, seed=cfg.seed)
    s_per_step = statistics.median(cost["step_seconds"])
    floor_steps = cfg.warmup + 20
    steps = max(floor_steps, int(margin * minutes * 60 / s_per_step))
    out.ckpt_every = min(out.ckpt_every, steps)
    with_steps(out, steps)
    info = {"minutes": minutes, "s_per_step": s_per_step, "steps": steps,
            "preset_steps": cfg.steps, "images_per_s": cfg.batch_size / s_per_step}
    if echo is not None:
        slow = steps == floor_steps and floor_steps * s_per_step > minutes * 60
        echo(f"this CPU: {s_per_step:.2f} s per step of batch {cfg.batch_size} "
             f"({info['images_per_s']:.0f} images/s) -> {steps} steps fill {minutes:g} min"
             + (f" (a slow machine: the floor of {floor_steps} steps takes "
                f"{floor_steps * s_per_step / 60:.1f} min)" if slow else ""))
    return out, info
