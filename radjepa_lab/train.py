"""I-JEPA pretraining: the loss, the schedules, the EMA, one training step and the trainer.

Read top to bottom, this is one training step of I-JEPA:

1. draw masks (one context block, M target blocks) for the batch (:mod:`radjepa_lab.batches`);
2. the EMA **target encoder** sees the whole image; its tokens are layer-normed (no
   affine) and the target blocks are gathered from them;
3. the **context encoder** sees only the context tokens; the **predictor** fills in
   every target block from them (all M blocks in one batched call);
4. smooth-L1 between prediction and target, AdamW step, then the target encoder
   moves towards the context encoder with momentum ``m`` (0.996 -> 1).

The trainer is shared: ``TrainConfig.objective`` swaps steps 1-4 for DINO-style
self-distillation or MAE pixel reconstruction (:mod:`radjepa_lab.objectives`, each an
:class:`Objective` like :class:`JEPA`), while the encoder, the data stream, the schedules,
checkpoints, monitors, DDP and the stop/resume handling below stay the same for all three.

The same loop runs on CPU, one GPU (bf16 autocast, optional ``torch.compile``) and
torchrun/DDP. It never prints: metrics go to ``metrics.jsonl`` (:mod:`radjepa_lab.monitors`),
to callbacks and to an optional tqdm bar. Checkpoints (:mod:`radjepa_lab.checkpoints`) hold
every RNG state and the step stream is a pure function of (seed, step), so ``resume=True``
reproduces an uninterrupted run. The run folder is locked and never overwritten by accident,
and Ctrl-C / SIGTERM stop a run after its current step with a resumable checkpoint
(:mod:`radjepa_lab.runs`).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from radjepa_lab import distributed as D
from radjepa_lab.batches import cache_dataset, default_dataset, h2d, monitor_images, step_stream
from radjepa_lab.checkpoints import (
    CKPT_FORMAT,
    CKPT_NAME,
    CKPT_VERSION,
    checkpoint_config,
    load_checkpoint,
    load_weights,
    require_entries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from radjepa_lab.config import (
    TrainConfig,
    config_field_names,
    config_to_dict,
    resolve_device,
    revalidate,
    use_bf16,
)
from radjepa_lab.errors import (
    CheckpointError,
    ConfigError,
    RadJEPALabError,
    TrainingError,
    TrainingInterrupted,
)
from radjepa_lab.masks import MultiBlockMaskSampler
from radjepa_lab.models import (
    Predictor,
    VisionTransformer,
    apply_masks,
    build_encoder,
    build_predictor,
    normalize_targets,
    predict_targets,
)
from radjepa_lab.monitors import (
    METRICS_NAME,
    append_metrics,
    collapse_monitors,
    read_metrics,
    write_metrics,
)
from radjepa_lab.runs import StopSignals, resume_changes, run_folder

__all__ = [
    "JEPA",
    "Objective",
    "TrainResult",
    "build_objective",
    "ema_update",
    "jepa_loss",
    "lr_at",
    "momentum_at",
    "param_groups",
    "pretrain",
    "resume_changes",
    "wd_at",
]

# ----------------------------------------------------------------------------- loss & schedules


def jepa_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1", beta: float = 1.0
) -> torch.Tensor:
    """Mean smooth-L1 (or L2) between predictions and layer-normed targets.

    The target is normalised per token with ``F.layer_norm`` WITHOUT affine parameters
    (as in I-JEPA), so its scale cannot shrink to make the loss trivially small.
    """
    target = normalize_targets(target)
    pred = pred.float()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ConfigError(f"jepa_loss(kind={kind!r}): use 'smooth_l1' or 'l2'.")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup ``start_lr -> lr`` over ``warmup`` steps, then cosine to ``final_lr``."""
    if step < cfg.warmup:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.final_lr + (cfg.lr - cfg.final_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def wd_at(step: int, cfg: TrainConfig) -> float:
    """Cosine increase ``wd[0] -> wd[1]`` over the run."""
    t = min(step / cfg.steps, 1.0)
    return cfg.wd[1] + (cfg.wd[0] - cfg.wd[1]) * 0.5 * (1.0 + math.cos(math.pi * t))


def momentum_at(step: int, cfg: TrainConfig) -> float:
    """EMA momentum, linear ``ema[0] -> ema[1]``."""
    return cfg.ema[0] + (cfg.ema[1] - cfg.ema[0]) * min(step / cfg.steps, 1.0)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = m * target + (1 - m) * online`` for every parameter (buffers copied)."""
    tp = [p for p in target.parameters()]
    op = [p.detach() for p in online.parameters()]
    if len(tp) != len(op):
        raise TrainingError("EMA: target and online encoders have different parameters.")
    torch._foreach_mul_(tp, momentum)
    torch._foreach_add_(tp, op, alpha=1.0 - momentum)
    for bt, bo in zip(target.buffers(), online.buffers(), strict=True):
        bt.copy_(bo)


def param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only, never on biases or 1-D (norm) params."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "apply_wd": True},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
    ]


# ----------------------------------------------------------------------------- trainer


def _raise_if_nonfinite(bad: torch.Tensor, info: D.DistInfo, since: int, step: int, lr: float,
                        last_ckpt: Path | None) -> None:
    """TrainingError if any rank saw a NaN/Inf loss; checked before any checkpoint is written."""
    flag = bad.float()
    if info.enabled:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if float(flag) > 0:
        where = f"at step {step}" if since == step else f"between steps {since} and {step}"
        kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint yet"
        raise TrainingError(
            f"The loss became NaN/Inf {where} (lr={lr:.3g}); training stopped and {kept}. "
            "Lower TrainConfig.lr, set grad_clip, or check the data range."
        )


class Objective:
    """What every objective shares: the optimiser, DDP, precision, and the shape of ONE step.

    A subclass builds its networks and hands the part that gets gradients to :meth:`_setup`;
    it then only says how a batch becomes a loss (:meth:`loss`) and what follows the optimiser
    step (:meth:`after_step`, e.g. the EMA). ``networks`` maps checkpoint keys to modules (what
    :func:`pretrain` saves and resumes), ``evaluated`` is the encoder the collapse monitors and
    every analysis look at, and :meth:`sampler` draws the step's masks (or None). :class:`JEPA`
    is this module's; DINO and MAE live in :mod:`radjepa_lab.objectives`.
    """

    name = "objective"
    title = "objective"  # progress bar

    def __init__(self, cfg: TrainConfig, device: torch.device,
                 info: D.DistInfo | None = None) -> None:
        self.cfg, self.device, self.info = cfg, device, info or D.DistInfo()
        self.networks: dict[str, nn.Module] = {}
        self.evaluated: nn.Module | None = None
        self.bf16 = use_bf16(cfg, device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.since, self.last_ckpt = 0, None  # for the NaN message: window start, kept file

    def precision(self) -> Any:
        """The forward's numeric context: bf16 autocast when enabled. On a CPU it also picks
        PyTorch's plain (math) attention: its bf16 flash kernel is slower than fp32 at the
        kit's short sequences, and with it bf16 would bring no speed-up at all
        (bench/RESULTS.md)."""
        if not self.bf16:
            return nullcontext()
        stack = ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        if self.device.type == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        return stack

    def _setup(self, online: nn.Module) -> None:
        """Optimiser over ``online`` (the part with gradients), wrapped in DDP / compile."""
        self.online = online.to(self.device)
        # fused AdamW: one kernel for all params; far faster than foreach on small CPU models
        self.opt = torch.optim.AdamW(param_groups(self.online), lr=self.cfg.start_lr,
                                     betas=self.cfg.betas, fused=True)
        self.model: nn.Module = self.online
        if self.info.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.online,
                device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.cfg.compile:
            self.model = torch.compile(self.model)

    def sampler(self) -> Any:
        """The step's mask sampler (:func:`radjepa_lab.batches.step_masks`), or None."""
        return None

    def loss(self, step: int, imgs: Any, masks: Any) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Runs after the optimiser step (the EMA of a teacher)."""

    def before_update(self, step: int) -> None:
        """Runs between backward and the optimiser step (e.g. freezing some gradients)."""

    def log_fields(self, imgs: Any, masks: Any) -> dict[str, Any]:
        """Objective-specific numbers logged with every record."""
        return {}

    def step(self, step: int, imgs: Any, masks: Any,
             check: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimisation step; returns (detached loss, grad norm or None).

        NaN/Inf is checked before the update on CPU every step; on GPU only when ``check``
        (log/checkpoint steps) to avoid a host sync per step. It is always checked before
        anything is written, so a saved checkpoint never holds NaN weights.
        """
        cfg = self.cfg
        lr, wd = lr_at(step, cfg), wd_at(step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
            if g["apply_wd"]:
                g["weight_decay"] = wd
        with self.precision():
            loss = self.loss(step, imgs, masks)
        self.bad |= ~torch.isfinite(loss.detach())
        if check or self.device.type != "cuda":
            _raise_if_nonfinite(self.bad, self.info, self.since, step, lr, self.last_ckpt)
            self.since = step + 1
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.online.parameters(), cfg.grad_clip)
        self.before_update(step)
        self.opt.step()
        self.after_step(step)
        return loss.detach(), grad_norm


class _Online(nn.Module):
    """Context encoder + predictor: the part that gets gradients (and DDP)."""

    def __init__(self, encoder: VisionTransformer, predictor: Predictor) -> None:
        super().__init__()
        self.encoder, self.predictor = encoder, predictor

    def forward(self, imgs: torch.Tensor, ctx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return predict_targets(self.encoder, self.predictor, imgs, ctx, tgt)


class JEPA(Objective):
    """The three I-JEPA networks and the loss of ONE training step (steps 2-4 of the module doc).

    :func:`pretrain` drives it (data, logging, checkpoints); ``bench/throughput.py`` calls
    :meth:`step` directly so the benchmark times exactly the trainer's step.
    """

    name, title = "jepa", "I-JEPA"

    def __init__(self, cfg: TrainConfig, device: torch.device,
                 info: D.DistInfo | None = None) -> None:
        super().__init__(cfg, device, info)
        self.encoder = build_encoder(cfg.model, init=cfg.model.encoder_init, seed=cfg.seed)
        self.predictor = build_predictor(cfg.model, seed=cfg.seed)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False).eval().to(device)
        self._setup(_Online(self.encoder, self.predictor))
        self.networks = {"encoder": self.encoder, "predictor": self.predictor,
                         "target_encoder": self.target}
        self.evaluated = self.target

    def sampler(self) -> MultiBlockMaskSampler:
        return MultiBlockMaskSampler(self.cfg.model.grid, self.cfg.masks)

    def loss(self, step: int, imgs: torch.Tensor, masks: Any) -> torch.Tensor:
        ctx, tgt = h2d(masks.context, self.device), h2d(masks.targets, self.device)
        with torch.no_grad():
            h_tgt = apply_masks(self.target(imgs), tgt)
        pred = self.model(imgs, ctx, tgt)
        return jepa_loss(pred, h_tgt, self.cfg.loss, self.cfg.smooth_l1_beta)

    def after_step(self, step: int) -> None:
        ema_update(self.target, self.encoder, momentum_at(step, self.cfg))

    def log_fields(self, imgs: Any, masks: Any) -> dict[str, Any]:
        return {"ctx_tokens": int(masks.context.shape[1]),
                "tgt_tokens": int(masks.targets.shape[2])}


def build_objective(cfg: TrainConfig, device: torch.device,
                    info: D.DistInfo | None = None) -> Objective:
    """The objective ``cfg.objective`` names, with its networks built from ``cfg``."""
    if cfg.objective == "jepa":
        return JEPA(cfg, device, info)
    from radjepa_lab.objectives import OBJECTIVE_CLASSES  # they build on this module

    return OBJECTIVE_CLASSES[cfg.objective](cfg, device, info)


@dataclass
class TrainResult:
    """What a run produced; the modules are returned on CPU in eval mode. ``networks`` holds
    every network of the objective by checkpoint key; ``evaluated`` is the encoder the
    monitors watched (I-JEPA's target encoder, DINO's teacher, MAE's encoder)."""

    history: list[dict[str, Any]]
    checkpoint: Path | None
    out_dir: Path
    steps_done: int
    encoder: VisionTransformer | None = None
    target_encoder: VisionTransformer | None = None
    predictor: Predictor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, nn.Module] = field(default_factory=dict)
    evaluated: VisionTransformer | None = None


def pretrain(
    cfg: TrainConfig,
    out_dir: str | Path,
    dataset: Dataset | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    progress: bool = True,
    *,
    max_steps: int | None = None,
    overwrite: bool = False,
    allow_changes: Iterable[str] = (),
) -> TrainResult:
    """Pretrain with ``cfg`` (I-JEPA, or ``cfg.objective``'s DINO / MAE); metrics in
    ``out_dir/metrics.jsonl``, checkpoint in ``out_dir/checkpoint.pt``.

    ``dataset`` yields dicts with ``"img"`` in [0, 1] (any size; resized to the model);
    ``None`` uses ``cfg.data`` (phantoms, a folder or a CSV manifest). ``callbacks`` receive
    every logged metrics dict. ``max_steps`` stops early (schedules still follow ``cfg.steps``)
    so a long run can be split into sessions with ``resume=True``. Under ``torchrun`` each
    process calls this function; rank 0 writes files.

    A folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (replace it). A resumed run must use the checkpoint's config: each field it
    changes must be named in ``allow_changes`` (dotted names such as ``"lr"`` or
    ``"masks.pred_scale"``; the model never changes) and is logged to ``metrics.jsonl`` as a
    ``config_change`` event. SIGINT (Ctrl-C) or SIGTERM stop the run after the current step with
    a resumable checkpoint and raise :class:`~radjepa_lab.errors.TrainingInterrupted`.
    """
    revalidate(cfg)  # a config changed attribute by attribute in Python is checked here
    if resume and overwrite:
        raise ConfigError("pretrain: resume=True and overwrite=True contradict each other; "
                          "resume continues the run in the folder, overwrite replaces it.")
    allow = set(allow_changes)
    unknown = sorted(allow - config_field_names())
    if unknown:
        raise ConfigError(f"pretrain(allow_changes=...): {unknown} are not config fields; use "
                          "dotted names such as 'lr' or 'masks.pred_scale'.")
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    info = D.setup(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        with ExitStack() as stack:
            problem = None
            try:  # only rank 0 checks and locks the folder; every rank learns the verdict
                stack.enter_context(run_folder(out, (CKPT_NAME, METRICS_NAME), resume,
                                               overwrite, lock=info.is_main))
            except RadJEPALabError as e:
                problem = e
            problem = D.from_main(problem, info)
            if problem is not None:
                raise problem
            stop = stack.enter_context(StopSignals())
            return _run(cfg, out, dataset, resume, callbacks, progress, max_steps, device, info,
                        allow, stop)
    finally:
        D.teardown(info)


def _run(cfg: TrainConfig, out: Path, dataset: Dataset | None, resume: bool,
         callbacks: Sequence[Callable[[dict[str, Any]], None]], progress: bool,
         max_steps: int | None, device: torch.device, info: D.DistInfo, allow: set[str],
         stop: StopSignals) -> TrainResult:
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"TrainConfig.batch_size={cfg.batch_size} must be divisible by the "
            f"{info.world_size} processes."
        )
    ckpt_path, metrics_path = out / CKPT_NAME, out / METRICS_NAME
    state, changes = None, {}
    if resume and ckpt_path.exists():  # check the checkpoint before building anything
        state = load_checkpoint(ckpt_path)
        require_entries(state, ("step", "optimizer", "rng"), ckpt_path, "resuming a run")
        changes = resume_changes(checkpoint_config(state, ckpt_path), cfg, allow, ckpt_path)
        if int(state["step"]) > cfg.steps:
            raise ConfigError(f"{ckpt_path} is at step {int(state['step'])}, beyond "
                              f"steps={cfg.steps}; give a larger --steps to continue it.")
        stop.saved = (int(state["step"]), ckpt_path)
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)
    random.seed(cfg.seed + info.rank)

    jepa = build_objective(cfg, device, info)  # the objective's networks and its step
    opt = jepa.opt

    start, window = 0, None
    if state is not None:
        require_entries(state, tuple(jepa.networks), ckpt_path, "resuming a run")
        for key, net in jepa.networks.items():
            load_weights(net, state, key, cfg, ckpt_path)
        try:
            opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{ckpt_path}: its optimizer state does not fit the "
                                  f"model ({e}); the file is corrupt.") from e
        start = int(state["step"])
        set_rng_state(state["rng"][min(info.rank, len(state["rng"]) - 1)])
        window = state.get("data", {}).get("window")  # a run stopped mid logging window
    history: list[dict[str, Any]] = []
    if info.is_main and resume:
        history = read_metrics(metrics_path, upto=start)  # later rows belong to a lost future
        if metrics_path.exists():
            write_metrics(metrics_path, history)
        if changes:
            event = {"step": start, "event": "config_change",
                     "changes": {k: list(v) for k, v in changes.items()}}
            history.append(event)
            append_metrics(metrics_path, event)

    # -- data
    data = dataset if dataset is not None else default_dataset(cfg)
    cached = cache_dataset(data, cfg) if cfg.cache_data else None
    if cached is not None and device.type == "cuda":
        cached = cached.to(device)
    masks = jepa.sampler()
    mon_imgs = monitor_images(data, cached, cfg).to(device) if info.is_main else None

    end = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    bar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=start, desc=jepa.title, unit="step", leave=True)

    loss_sum = torch.zeros((), device=device)
    n_in_window, t_window, done = 0, time.perf_counter(), start
    if window is not None:  # each rank's loss sum of the logging window the stop interrupted
        sums = window["loss_sums"]
        loss_sum, n_in_window = sums[min(info.rank, len(sums) - 1)].to(device), int(window["n"])

    def checkpoint(step: int) -> None:
        mine = (rng_state(), loss_sum.detach().cpu().clone())
        ranks = [mine]
        if info.enabled:
            ranks = [None] * info.world_size
            torch.distributed.all_gather_object(ranks, mine)
        rngs, sums = [r[0] for r in ranks], [r[1] for r in ranks]
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "format": CKPT_FORMAT, "version": CKPT_VERSION, "step": step,
                "config": config_to_dict(cfg),
                **{key: net.state_dict() for key, net in jepa.networks.items()},
                "optimizer": opt.state_dict(),
                "rng": rngs, "data": {"next_step": step, "seed": cfg.seed,
                                      "world_size": info.world_size,
                                      "window": {"loss_sums": sums, "n": n_in_window}},
            })
        jepa.last_ckpt, stop.saved = ckpt_path, (step, ckpt_path)

    def log_due(done: int) -> bool:
        # Every checkpoint closes a logging window and a resumed run logs nothing extra, so a
        # run killed and resumed from its checkpoint logs exactly the uninterrupted run's rows.
        # (A run stopped by a signal saves its open window in the checkpoint instead.)
        return done % cfg.log_every == 0 or done in (end, 1) or ckpt_due(done)

    def ckpt_due(done: int) -> bool:
        return done % cfg.ckpt_every == 0 or done == end

    jepa.since = start
    jepa.last_ckpt = ckpt_path if ckpt_path.exists() and resume else None
    batches = step_stream(data, cached, cfg, start, masks, device, info.rank, info.world_size)
    stop.in_loop = True
    try:
        for step, imgs, mb in batches:
            if step >= end:
                break
            check = log_due(step + 1) or ckpt_due(step + 1)
            loss, grad_norm = jepa.step(step, imgs, mb, check=check)
            lr, wd, m = lr_at(step, cfg), wd_at(step, cfg), momentum_at(step, cfg)
            loss_sum += loss.detach()
            n_in_window += 1
            done = step + 1
            if bar is not None:
                bar.update(1)

            if log_due(done):
                mean_loss = float(D.mean_across_ranks(loss_sum, info)) / n_in_window
                elapsed = time.perf_counter() - t_window
                rec: dict[str, Any] = {
                    "step": done, "loss": mean_loss, "lr": lr, "wd": wd, "momentum": m,
                    "imgs_per_s": cfg.batch_size * n_in_window / max(elapsed, 1e-9),
                    **jepa.log_fields(imgs, mb),
                }
                if cfg.objective == "mae":  # no teacher, so no EMA
                    del rec["momentum"]
                if grad_norm is not None:
                    rec["grad_norm"] = float(grad_norm)
                if info.is_main:
                    rec.update(collapse_monitors(jepa.evaluated, mon_imgs, jepa.precision()))
                    history.append(rec)
                    append_metrics(metrics_path, rec)
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.4f}", rankme=f"{rec['rankme']:.1f}")
                    for cb in callbacks:
                        cb(rec)
                loss_sum.zero_()
                n_in_window, t_window = 0, time.perf_counter()
            signum = D.max_across_ranks(stop.signum or 0, info, device,
                                        now=check or device.type != "cuda")
            if ckpt_due(done) or signum:
                checkpoint(done)
            if signum and done < end:  # a signal during the last step lets the run finish
                raise TrainingInterrupted(
                    f"interrupted by {stop.name(signum)} at step {done}: saved at step {done} "
                    f"({ckpt_path}); resume with `radjepa-lab pretrain ... --resume` (the same "
                    "options), in Python pretrain(..., resume=True).", done, ckpt_path, signum)
            if done >= end:
                break
    finally:
        stop.in_loop = False
        batches.close()  # stop DataLoader workers now, also when the loop raised
        if bar is not None:
            bar.close()
    D.barrier(info)
    nets = {key: net.eval().cpu() for key, net in jepa.networks.items()}
    return TrainResult(
        history=history, checkpoint=jepa.last_ckpt, out_dir=out, steps_done=done,
        encoder=nets.get("encoder"), target_encoder=nets.get("target_encoder"),
        predictor=nets.get("predictor"),
        info={"device": str(device), "world_size": info.world_size, "start_step": start,
              "bf16": jepa.bf16, "config_changes": changes, "objective": cfg.objective},
        networks=nets, evaluated=jepa.evaluated,
    )
