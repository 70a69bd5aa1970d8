"""I-JEPA pretraining: loss, schedules, EMA, monitors, checkpoints and the one trainer.

Read top to bottom, this is one training step of I-JEPA:

1. draw masks (one context block, M target blocks) for the batch;
2. the EMA **target encoder** sees the whole image; its tokens are layer-normed (no
   affine) and the target blocks are gathered from them;
3. the **context encoder** sees only the context tokens; the **predictor** fills in
   every target block from them (all M blocks in one batched call);
4. smooth-L1 between prediction and target, AdamW step, then the target encoder
   moves towards the context encoder with momentum ``m`` (0.996 -> 1).

The same loop runs on CPU, one GPU (bf16 autocast, optional ``torch.compile``) and
torchrun/DDP. It never prints: metrics go to ``metrics.jsonl``, to callbacks and to an
optional tqdm bar. Every step's data and masks are a pure function of (seed, step), and
checkpoints hold all RNG states, so ``resume=True`` reproduces an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from radjepa_lab import distributed as D
from radjepa_lab.config import TrainConfig, config_from_dict, config_to_dict, resolve_device
from radjepa_lab.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    RadJEPALabError,
    TrainingError,
)
from radjepa_lab.masks import MaskBatch, MultiBlockMaskSampler
from radjepa_lab.models import (
    Predictor,
    VisionTransformer,
    apply_masks,
    build_encoder,
    build_predictor,
)

__all__ = [
    "JEPA",
    "MONITOR_TOP_K",
    "RANKME_DIP_FLOOR",
    "TAIL_KEY",
    "TOP_SHARE_KEY",
    "TrainResult",
    "ema_update",
    "feature_std",
    "jepa_loss",
    "load_checkpoint",
    "lr_at",
    "momentum_at",
    "param_groups",
    "pretrain",
    "rankme",
    "rankme_dipped",
    "rankme_split",
    "save_checkpoint",
    "wd_at",
]

CKPT_NAME = "checkpoint.pt"
# The monitors split RankMe after this many leading directions (rankme_split).
MONITOR_TOP_K = 5
# metrics.jsonl keys of that split; readers use these names so changing k changes them all.
TOP_SHARE_KEY = f"top{MONITOR_TOP_K}_share"
TAIL_KEY = f"rankme_tail{MONITOR_TOP_K}"
# A RankMe log below this fraction of the first one counts as a dip (collapse_summary and the
# quality benchmark's no_collapse flag share it, so they never disagree). 1.0 is issue 4's
# "does not fall below its init value" read strictly: any log under the first is a dip.
RANKME_DIP_FLOOR = 1.0


def rankme_dipped(first: float, lowest: float) -> bool:
    """Whether the lowest RankMe log counts as a dip below the first (``RANKME_DIP_FLOOR``).

    The one test behind ``collapse_summary`` and the quality benchmark's ``no_collapse``
    flag, so the notebook and the benchmark never disagree about a run.
    """
    return lowest < RANKME_DIP_FLOOR * first


METRICS_NAME = "metrics.jsonl"
CKPT_FORMAT = "radjepa_lab"
CKPT_VERSION = 1

# ----------------------------------------------------------------------------- loss & schedules


def jepa_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1", beta: float = 1.0
) -> torch.Tensor:
    """Mean smooth-L1 (or L2) between predictions and layer-normed targets.

    The target is normalised per token with ``F.layer_norm`` WITHOUT affine parameters
    (as in I-JEPA), so its scale cannot shrink to make the loss trivially small.
    """
    target = F.layer_norm(target.float(), (target.shape[-1],))
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


# ----------------------------------------------------------------------------- monitors


def _singular_values(features: torch.Tensor, center: bool) -> torch.Tensor:
    f = features.detach()
    f = f.double() if f.dtype == torch.float64 else f.float()
    if center:
        f = f - f.mean(0, keepdim=True)
    return torch.linalg.svdvals(f)


def _entropy_rank(s: torch.Tensor, eps: float) -> float:
    if float(s.sum()) <= 0:
        return 1.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def rankme(features: torch.Tensor, center: bool = True, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of normalised singular values.

    Ranges from 1 (collapsed) to min(N, D). ``center=True`` removes the mean first, so a
    large shared offset cannot hide collapse (the variant used in the research notes).
    ``analysis.metrics.rankme`` delegates here, so notebooks and metrics.jsonl agree.
    """
    return _entropy_rank(_singular_values(features, center), eps)


@torch.no_grad()
def rankme_split(features: torch.Tensor, k: int = 5, center: bool = True,
                 eps: float = 1e-7) -> dict[str, float]:
    """RankMe with the ``k`` leading directions split from the rest.

    A falling RankMe has two causes that call for different responses: dimensions dying
    (collapse), or a few learned directions growing faster than the others (SSL learns its
    leading directions first). Collapse shrinks ``rankme_tail``, the RankMe of the singular
    values after the first ``k``; growth of the leading directions only raises ``top_share``,
    their share of the singular-value sum.
    """
    if k < 1:
        raise RadJEPALabError(f"rankme_split: k must be >= 1, got {k}")
    s = _singular_values(features, center)
    if s.numel() <= k:
        raise RadJEPALabError(
            f"rankme_split: need more than k={k} singular values, features have {s.numel()}"
        )
    total = float(s.sum())
    return {
        "rankme": _entropy_rank(s, eps),
        "top_share": float(s[:k].sum()) / total if total > 0 else 1.0,
        "rankme_tail": _entropy_rank(s[k:], eps),
    }


@torch.no_grad()
def feature_std(features: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised features: ~1/sqrt(D) healthy, ->0 collapsed."""
    f = features.detach()
    f = F.normalize(f.double() if f.dtype == torch.float64 else f.float(), dim=1)
    return float(f.std(0, unbiased=False).mean())


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically: temp file in the same folder, fsync, then ``os.replace``.

    A crash mid-write leaves the previous checkpoint intact. ``state`` must hold only
    plain containers, tensors and numbers so that ``weights_only`` loading accepts it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    _sweep_stale_temps(path)
    return path


def _sweep_stale_temps(path: Path) -> None:
    """Delete temp files of writers that died mid-write (SIGKILL, OOM, power loss); a temp
    file whose process is still alive is another writer's and is left alone."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            if pid != os.getpid():
                os.kill(pid, 0)
                continue  # alive
        except ProcessLookupError:
            pass  # dead writer
        except (ValueError, PermissionError):
            continue  # not ours to judge
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a kit checkpoint with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; train first or fix the path.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot be loaded with weights_only=True ({type(e).__name__}: {e}); it is "
            "corrupt or holds pickled objects."
        ) from e
    if not isinstance(obj, dict) or obj.get("format") != CKPT_FORMAT:
        raise CheckpointError(
            f"{path}: not a RadJEPA Lab checkpoint (no format={CKPT_FORMAT!r}); use "
            "radjepa_lab.models.load_encoder for I-JEPA/RadJEPA/DINOv2 files."
        )
    return obj


def _rng_state() -> dict[str, Any]:
    """Every global RNG as tensors/numbers (weights_only-loadable)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pstate, pgauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(pstate, dtype=torch.int64),
                   "gauss": pgauss},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ----------------------------------------------------------------------------- data


def _item_image(item: Any) -> torch.Tensor:
    img = item["img"] if isinstance(item, dict) else item[0] if isinstance(item, list | tuple) else item
    img = torch.as_tensor(img)
    return img.unsqueeze(0) if img.ndim == 2 else img


def _to_model_images(imgs: torch.Tensor, size: int, in_chans: int) -> torch.Tensor:
    """Float [B,C,size,size] in [0,1]; resizes and folds RGB to gray when needed."""
    imgs = imgs.float()
    if imgs.shape[1] != in_chans and imgs.shape[1] == 3 and in_chans == 1:
        imgs = imgs.mean(1, keepdim=True)
    if imgs.shape[-2:] != (size, size):
        mode = "area" if imgs.shape[-1] > size else "bilinear"
        imgs = F.interpolate(imgs, size=(size, size), mode=mode)
    return imgs


def _check_range(imgs: torch.Tensor) -> None:
    lo, hi = float(imgs.amin()), float(imgs.amax())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise DataError(
            f"Training images must lie in [0, 1] but a batch spans [{lo:.3g}, {hi:.3g}]. "
            "Rescale in the dataset (e.g. XRVAdapter converts torchxrayvision's [-1024, 1024])."
        )


class StepBatchSampler(Sampler[list[int]]):
    """Batches as a pure function of the step: epoch permutations seeded by (seed, epoch).

    Global position ``p = step * B + j`` maps to ``perm[epoch(p)][p % n]``; rank r takes
    its slice of each global batch. Resuming at step s therefore replays the exact stream,
    and the union over ranks equals the single-process batch.
    """

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int, steps: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if n < 1:
            raise DataError("The training dataset is empty.")
        self.n, self.b, self.seed = n, global_batch, seed
        self.start, self.steps = start_step, steps
        self.local = global_batch // world_size
        self.offset = rank * self.local
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def batch(self, step: int) -> torch.Tensor:
        """Dataset indices [local batch] of this rank at ``step``."""
        pos = torch.arange(step * self.b + self.offset, step * self.b + self.offset + self.local)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            out[sel] = self.perm(e)[pos[sel] % self.n]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield self.batch(step).tolist()

    def __len__(self) -> int:
        return self.steps - self.start


class _Cached(Dataset):
    """A dataset materialised once as uint8 [N,1,S,S] (4x smaller than float)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"img": self.images[i].float() / 255.0, "idx": i}


def _cache(dataset: Dataset, cfg: TrainConfig) -> torch.Tensor:
    size, chans = cfg.model.img_size, cfg.model.in_chans

    def collate(items: list[Any]) -> torch.Tensor:
        imgs = torch.stack([_item_image(it) for it in items])
        return _to_model_images(imgs, size, chans)

    loader = DataLoader(dataset, batch_size=256, shuffle=False, num_workers=cfg.num_workers,
                        collate_fn=collate)
    out = []
    it = iter(loader)
    try:
        for imgs in it:
            _check_range(imgs)
            if not torch.isfinite(imgs).all():  # the uint8 cast below would make them 0
                bad = int(torch.isfinite(imgs).flatten(1).all(1).logical_not().nonzero()[0])
                raise DataError(f"Training image {256 * len(out) + bad} of the dataset has "
                                "NaN/Inf pixels; fix the dataset or its transform.")
            out.append((imgs.clamp(0, 1) * 255.0).round().to(torch.uint8))
    finally:
        _close_loader(it)
    return torch.cat(out)


def _close_loader(it: Any) -> None:
    """Stop a DataLoader iterator's worker processes now. After an error, the traceback
    keeps the iterator alive (a notebook keeps the last one indefinitely), and with it every
    worker process and its memory."""
    shutdown = getattr(it, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is not None:
        shutdown()


def _default_dataset(cfg: TrainConfig) -> Dataset:
    if cfg.data == "phantoms":
        try:
            from radjepa_lab.data.phantom import PhantomConfig, PhantomDataset
        except ImportError as e:  # pragma: no cover - the data layer ships with the kit
            raise ConfigError(f"data='phantoms' needs radjepa_lab.data.phantom ({e}).") from e
        if cfg.n_train < 1:
            raise ConfigError("TrainConfig.n_train must be >= 1 when data='phantoms'.")
        return PhantomDataset(cfg.n_train, seed=cfg.seed, cfg=PhantomConfig(size=cfg.phantom_px))
    path = Path(cfg.data)
    if not path.exists():
        raise ConfigError(f"TrainConfig.data={cfg.data!r}: use 'phantoms' or an existing folder.")
    from radjepa_lab.data.datasets import FolderDataset

    return FolderDataset(path, size=cfg.model.img_size)


class _StepCollate:
    """Collates images and draws the step's masks (runs inside DataLoader workers)."""

    def __init__(self, sampler: StepBatchSampler, masks: MultiBlockMaskSampler, seed: int,
                 rank: int, size: int, chans: int) -> None:
        self.sampler, self.masks, self.seed, self.rank = sampler, masks, seed, rank
        self.size, self.chans = size, chans

    def __call__(self, items: list[tuple[int, Any]]) -> tuple[int, torch.Tensor, MaskBatch]:
        step = items[0][0]
        imgs = torch.stack([_item_image(it) for _, it in items])
        imgs = _to_model_images(imgs, self.size, self.chans)
        return step, imgs, _step_masks(self.masks, len(items), self.seed, step, self.rank)


def _step_masks(sampler: MultiBlockMaskSampler, b: int, seed: int, step: int,
                rank: int) -> MaskBatch:
    g = torch.Generator().manual_seed((seed * 7_919 + step) * 1_009 + rank)
    return sampler.sample(b, g)


class _StepDataset(Dataset):
    """Wraps a dataset so workers see which step an index belongs to."""

    def __init__(self, base: Dataset, sampler: StepBatchSampler) -> None:
        self.base, self.sampler = base, sampler

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Any]:
        step, i = key
        return step, self.base[i]


class _KeyedBatches(Sampler[list[tuple[int, int]]]):
    def __init__(self, inner: StepBatchSampler) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.inner.start, self.inner.steps):
            yield [(step, i) for i in self.inner.batch(step).tolist()]

    def __len__(self) -> int:
        return len(self.inner)


def _batches(dataset: Dataset, cached: torch.Tensor | None, cfg: TrainConfig, start: int,
             info: D.DistInfo, masks: MultiBlockMaskSampler, device: torch.device,
             ) -> Iterator[tuple[int, torch.Tensor, MaskBatch]]:
    """Yield (step, images on device, masks) for steps start..cfg.steps-1."""
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps,  # type: ignore[arg-type]
                               info.rank, info.world_size)
    if cached is not None:  # one gather per step, no per-item Python
        for step in range(start, cfg.steps):
            idx = _h2d(sampler.batch(step), cached.device)
            imgs = cached.index_select(0, idx).to(device, non_blocking=True).float() / 255.0
            yield step, imgs, _step_masks(masks, len(idx), cfg.seed, step, info.rank)
        return
    collate = _StepCollate(sampler, masks, cfg.seed, info.rank, cfg.model.img_size,
                           cfg.model.in_chans)
    loader = DataLoader(_StepDataset(dataset, sampler), batch_sampler=_KeyedBatches(sampler),
                        collate_fn=collate, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda",
                        persistent_workers=False)
    it = iter(loader)
    try:
        for step, imgs, mb in it:
            _check_range(imgs)
            yield step, imgs.to(device, non_blocking=True), mb
    finally:
        _close_loader(it)


# ----------------------------------------------------------------------------- trainer


def _h2d(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> GPU copy from pinned memory, so the host never waits for queued kernels."""
    if device.type != "cuda" or t.device == device:
        return t
    return t.pin_memory().to(device, non_blocking=True)


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


class _Online(nn.Module):
    """Context encoder + predictor: the part that gets gradients (and DDP)."""

    def __init__(self, encoder: VisionTransformer, predictor: Predictor) -> None:
        super().__init__()
        self.encoder, self.predictor = encoder, predictor

    def forward(self, imgs: torch.Tensor, ctx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.encoder(imgs, ctx), ctx, tgt)


class JEPA:
    """The three networks, the optimiser and ONE training step (steps 2-4 of the module doc).

    :func:`pretrain` drives it (data, logging, checkpoints); ``bench/throughput.py`` calls
    :meth:`step` directly so the benchmark times exactly the trainer's step.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device,
                 info: D.DistInfo | None = None) -> None:
        self.cfg, self.device, self.info = cfg, device, info or D.DistInfo()
        self.encoder = build_encoder(cfg.model, init=cfg.model.encoder_init, seed=cfg.seed)
        self.predictor = build_predictor(cfg.model, seed=cfg.seed)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False).eval().to(device)
        self.online = _Online(self.encoder, self.predictor).to(device)
        # fused AdamW: one kernel for all params; far faster than foreach on small CPU models
        self.opt = torch.optim.AdamW(param_groups(self.online), lr=cfg.start_lr,
                                     betas=cfg.betas, fused=True)
        self.model: nn.Module = self.online
        if self.info.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.online, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                         if cfg.bf16 and device.type == "cuda" else nullcontext())
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.since, self.last_ckpt = 0, None  # for the NaN message: window start, kept file

    def step(self, step: int, imgs: torch.Tensor, ctx: torch.Tensor, tgt: torch.Tensor,
             check: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimisation step; returns (detached loss, grad norm or None).

        NaN/Inf is checked before the update on CPU every step; on GPU only when ``check``
        (log/checkpoint steps) to avoid a host sync per step. It is always checked before
        anything is written, so a saved checkpoint never holds NaN weights.
        """
        cfg = self.cfg
        lr, wd, m = lr_at(step, cfg), wd_at(step, cfg), momentum_at(step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
            if g["apply_wd"]:
                g["weight_decay"] = wd
        with self.autocast:
            with torch.no_grad():
                h_tgt = apply_masks(self.target(imgs), tgt)
            pred = self.model(imgs, ctx, tgt)
            loss = jepa_loss(pred, h_tgt, cfg.loss, cfg.smooth_l1_beta)
        self.bad |= ~torch.isfinite(loss.detach())
        if check or self.device.type != "cuda":
            _raise_if_nonfinite(self.bad, self.info, self.since, step, lr, self.last_ckpt)
            self.since = step + 1
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.online.parameters(), cfg.grad_clip)
        self.opt.step()
        ema_update(self.target, self.encoder, m)
        return loss.detach(), grad_norm


@dataclass
class TrainResult:
    """What a run produced; the modules are returned on CPU in eval mode."""

    history: list[dict[str, Any]]
    checkpoint: Path | None
    out_dir: Path
    steps_done: int
    encoder: VisionTransformer | None = None
    target_encoder: VisionTransformer | None = None
    predictor: Predictor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _read_history(path: Path, upto: int) -> list[dict[str, Any]]:
    """Metrics already logged up to step ``upto``; later lines belong to a lost future."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a crash mid-write; dropped below
            continue
    rows = [r for r in rows if isinstance(r, dict) and r.get("step", 0) <= upto]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def pretrain(
    cfg: TrainConfig,
    out_dir: str | Path,
    dataset: Dataset | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    progress: bool = True,
    *,
    max_steps: int | None = None,
) -> TrainResult:
    """Pretrain I-JEPA with ``cfg``; metrics in ``out_dir/metrics.jsonl``, checkpoint in
    ``out_dir/checkpoint.pt``.

    ``dataset`` yields dicts with ``"img"`` in [0, 1] (any size; resized to the model);
    ``None`` uses ``cfg.data`` (phantoms or a folder). ``callbacks`` receive every logged
    metrics dict. ``max_steps`` stops early (schedules still follow ``cfg.steps``) so a
    long run can be split into sessions with ``resume=True``. Under ``torchrun`` each
    process calls this function; rank 0 writes files.
    """
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    info = D.setup(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        return _run(cfg, out, dataset, resume, callbacks, progress, max_steps, device, info)
    finally:
        D.teardown(info)


def _run(cfg: TrainConfig, out: Path, dataset: Dataset | None, resume: bool,
         callbacks: Sequence[Callable[[dict[str, Any]], None]], progress: bool,
         max_steps: int | None, device: torch.device, info: D.DistInfo) -> TrainResult:
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"TrainConfig.batch_size={cfg.batch_size} must be divisible by the "
            f"{info.world_size} processes."
        )
    ckpt_path, metrics_path = out / CKPT_NAME, out / METRICS_NAME
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)
    random.seed(cfg.seed + info.rank)

    jepa = JEPA(cfg, device, info)
    encoder, predictor, target, opt = jepa.encoder, jepa.predictor, jepa.target, jepa.opt

    start = 0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = config_to_dict(config_from_dict(state["config"]))
        if saved["model"] != config_to_dict(cfg)["model"]:
            raise CheckpointError(f"{ckpt_path}: its model config differs from cfg.model.")
        encoder.load_state_dict(state["encoder"])
        predictor.load_state_dict(state["predictor"])
        target.load_state_dict(state["target_encoder"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        _set_rng_state(state["rng"][min(info.rank, len(state["rng"]) - 1)])
    history = _read_history(metrics_path, start) if info.is_main and resume else []
    if info.is_main and not resume and metrics_path.exists():
        metrics_path.unlink()

    # -- data
    data = dataset if dataset is not None else _default_dataset(cfg)
    cached = _cache(data, cfg) if cfg.cache_data else None
    if cached is not None and device.type == "cuda":
        cached = cached.to(device)
    masks = MultiBlockMaskSampler(cfg.model.grid, cfg.masks)
    mon_imgs = _monitor_images(data, cached, cfg).to(device) if info.is_main else None

    end = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    bar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=start, desc="I-JEPA", unit="step", leave=True)

    def checkpoint(step: int) -> None:
        rngs = [_rng_state()]
        if info.enabled:
            rngs = [None] * info.world_size
            torch.distributed.all_gather_object(rngs, _rng_state())
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "format": CKPT_FORMAT, "version": CKPT_VERSION, "step": step,
                "config": config_to_dict(cfg),
                "encoder": encoder.state_dict(), "predictor": predictor.state_dict(),
                "target_encoder": target.state_dict(), "optimizer": opt.state_dict(),
                "rng": rngs, "data": {"next_step": step, "seed": cfg.seed,
                                      "world_size": info.world_size},
            })

    def log_due(done: int) -> bool:
        # Every checkpoint closes a logging window and a resumed run logs nothing extra, so a
        # run killed and resumed from its checkpoint logs exactly the uninterrupted run's rows.
        return done % cfg.log_every == 0 or done in (end, 1) or ckpt_due(done)

    def ckpt_due(done: int) -> bool:
        return done % cfg.ckpt_every == 0 or done == end

    loss_sum = torch.zeros((), device=device)
    n_in_window, t_window, done = 0, time.perf_counter(), start
    jepa.since = start
    jepa.last_ckpt = ckpt_path if ckpt_path.exists() and resume else None
    batches = _batches(data, cached, cfg, start, info, masks, device)
    for step, imgs, mb in batches:
        if step >= end:
            break
        ctx, tgt = _h2d(mb.context, device), _h2d(mb.targets, device)
        check = log_due(step + 1) or ckpt_due(step + 1)
        loss, grad_norm = jepa.step(step, imgs, ctx, tgt, check=check)
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
                "ctx_tokens": int(ctx.shape[1]), "tgt_tokens": int(tgt.shape[2]),
            }
            if grad_norm is not None:
                rec["grad_norm"] = float(grad_norm)
            if info.is_main:
                rec.update(_monitors(target, mon_imgs, jepa.autocast))
                history.append(rec)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", rankme=f"{rec['rankme']:.1f}")
                for cb in callbacks:
                    cb(rec)
            loss_sum.zero_()
            n_in_window, t_window = 0, time.perf_counter()
        if ckpt_due(done):
            checkpoint(done)
            jepa.last_ckpt = ckpt_path
        if done >= end:
            break
    if bar is not None:
        bar.close()
    D.barrier(info)
    for mod in (encoder, target, predictor):
        mod.eval()
    return TrainResult(
        history=history, checkpoint=jepa.last_ckpt, out_dir=out, steps_done=done,
        encoder=encoder.cpu(), target_encoder=target.cpu(), predictor=predictor.cpu(),
        info={"device": str(device), "world_size": info.world_size, "start_step": start},
    )


def _monitor_images(data: Dataset, cached: torch.Tensor | None, cfg: TrainConfig) -> torch.Tensor:
    """A fixed, seeded set of images for the collapse monitors (same every log)."""
    n = len(data) if cached is None else cached.shape[0]  # type: ignore[arg-type]
    k = min(cfg.monitor_batch, n)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 12345))[:k]
    if cached is not None:
        return cached.index_select(0, idx.to(cached.device)).float() / 255.0
    imgs = torch.stack([_item_image(data[int(i)]) for i in idx])
    return _to_model_images(imgs, cfg.model.img_size, cfg.model.in_chans)


@torch.no_grad()
def _monitors(target: VisionTransformer, imgs: torch.Tensor | None, autocast) -> dict[str, float]:
    if imgs is None:
        return {}
    with autocast:
        feats = torch.cat([target(chunk).mean(1) for chunk in imgs.split(256)])
    out = {"feat_std": feature_std(feats), "feat_std_ref": 1.0 / math.sqrt(feats.shape[1])}
    if min(feats.shape) > MONITOR_TOP_K + 1:  # a tiny monitor set has no tail to speak of
        split = rankme_split(feats, k=MONITOR_TOP_K)  # one SVD gives RankMe and its split
        out["rankme"] = split["rankme"]
        out[TOP_SHARE_KEY] = split["top_share"]
        out[TAIL_KEY] = split["rankme_tail"]
    else:
        out["rankme"] = rankme(feats)
    return out


def export_checkpoint(src: str | Path, dst: str | Path, half: bool = True,
                      keep_context: bool = False) -> Path:
    """Write a small, inference-only copy of a kit checkpoint (how the shipped one is made).

    Drops the optimiser, RNG and data-stream state and, unless ``keep_context``, the context
    encoder: the I-JEPA evaluation convention uses the EMA target encoder, and at the end of the
    schedule (momentum -> 1) the two are nearly identical, so loaders that need a context
    encoder (predicted-vs-target latents) fall back to the target weights and say so. ``half``
    stores float tensors as float16; loading casts them back to float32.
    """
    state = load_checkpoint(src)
    keys = ["target_encoder", "predictor"] + (["encoder"] if keep_context else [])

    def cast(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                for k, v in sd.items()}

    out = {k: state[k] for k in ("format", "version", "step", "config")}
    out.update({k: cast(state[k]) for k in keys})
    out["exported"] = {"from": str(src), "half": half, "context_encoder": keep_context}
    return save_checkpoint(dst, out)
