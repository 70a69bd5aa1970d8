"""The step stream: which images and which masks every training step sees.

Every step's batch and masks are a pure function of ``(seed, step, rank)``:
:class:`StepBatchSampler` maps a step to dataset indices through seeded epoch permutations and
:func:`step_masks` draws the step's context/target blocks from a generator seeded the same
way. A run resumed at step ``s`` therefore replays exactly the batches an uninterrupted run
would have seen, and the union over DDP ranks equals the single-process batch. The same holds
for the other objectives' inputs: MAE's random patch masks come from :func:`step_masks` too,
and DINO's views (:func:`multi_crop`) from the step's crop generator.

:func:`step_stream` is what the trainer (and ``bench/throughput.py``) iterates: it materialises
the dataset once as uint8 when ``cache_data`` is on (one gather per step, no per-item Python),
or streams it through DataLoader workers that also draw the masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from radjepa_lab.config import TrainConfig
from radjepa_lab.data.datasets import close_loader
from radjepa_lab.data.transforms import (
    random_intensity_jitter,
    random_resized_crop,
    resize_batch,
)
from radjepa_lab.errors import DataError
from radjepa_lab.runs import worker_init

__all__ = [
    "MultiCrop",
    "StepBatchSampler",
    "cache_dataset",
    "default_dataset",
    "h2d",
    "monitor_images",
    "multi_crop",
    "step_masks",
    "step_stream",
]


def _item_image(item: Any) -> torch.Tensor:
    img = item["img"] if isinstance(item, dict) else item[0] if isinstance(item, list | tuple) else item
    img = torch.as_tensor(img)
    return img.unsqueeze(0) if img.ndim == 2 else img


def _model_images(imgs: torch.Tensor, size: int, in_chans: int) -> torch.Tensor:
    """Float [B,C,size,size] in [0,1]; folds RGB to gray for a 1-channel model."""
    imgs = imgs.float()
    if imgs.shape[1] != in_chans and imgs.shape[1] == 3 and in_chans == 1:
        imgs = imgs.mean(1, keepdim=True)
    return resize_batch(imgs, size)


def _check_range(imgs: torch.Tensor) -> None:
    lo, hi = float(imgs.amin()), float(imgs.amax())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise DataError(
            f"Training images must lie in [0, 1] but a batch spans [{lo:.3g}, {hi:.3g}]. "
            "Rescale in the dataset (e.g. XRVAdapter converts torchxrayvision's [-1024, 1024])."
        )


def h2d(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> GPU copy from pinned memory, so the host never waits for queued kernels."""
    if device.type != "cuda" or t.device == device:
        return t
    return t.pin_memory().to(device, non_blocking=True)


class StepBatchSampler(Sampler[list[int]]):
    """Batches as a pure function of the step: epoch permutations seeded by (seed, epoch).

    Global position ``p = step * B + j`` maps to ``perm[epoch(p)][p % n]``; rank r takes
    its slice of each global batch.
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


def step_masks(sampler: Any, b: int, seed: int, step: int, rank: int) -> Any:
    """The masks of one step on one rank, from a generator seeded by (seed, step, rank).

    ``sampler`` is the objective's: I-JEPA's MultiBlockMaskSampler (a MaskBatch), MAE's
    RandomPatchMasker (PatchMasks), or None for DINO, whose views carry no masks."""
    if sampler is None:
        return None
    g = torch.Generator().manual_seed((seed * 7_919 + step) * 1_009 + rank)
    return sampler.sample(b, g)


def cache_dataset(dataset: Dataset, cfg: TrainConfig) -> torch.Tensor:
    """The whole dataset at the model's size as uint8 ``[N, C, S, S]`` (4x smaller than float),
    checked for range and NaN/Inf on the way in."""
    size, chans = cfg.model.img_size, cfg.model.in_chans

    def collate(items: list[Any]) -> torch.Tensor:
        return _model_images(torch.stack([_item_image(it) for it in items]), size, chans)

    loader = DataLoader(dataset, batch_size=256, shuffle=False, num_workers=cfg.num_workers,
                        collate_fn=collate, worker_init_fn=worker_init)
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
        close_loader(it)
    return torch.cat(out)


def default_dataset(cfg: TrainConfig) -> Dataset:
    """The dataset ``cfg.data`` names: ``phantoms`` (``cfg.n_train`` of them, seeded by
    ``cfg.seed``), a folder of images or a CSV manifest (only its path column is read:
    pretraining needs no labels)."""
    from radjepa_lab.data.datasets import resolve_dataset

    return resolve_dataset(cfg.data, cfg.model.img_size, seed=cfg.seed, n=cfg.n_train,
                           phantom_size=cfg.phantom_px, where="TrainConfig.data", labels=False)


def monitor_images(data: Dataset, cached: torch.Tensor | None, cfg: TrainConfig) -> torch.Tensor:
    """A fixed, seeded set of images for the collapse monitors (same every log)."""
    n = len(data) if cached is None else cached.shape[0]  # type: ignore[arg-type]
    k = min(cfg.monitor_batch, n)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 12345))[:k]
    if cached is not None:
        return cached.index_select(0, idx.to(cached.device)).float() / 255.0
    imgs = torch.stack([_item_image(data[int(i)]) for i in idx])
    return _model_images(imgs, cfg.model.img_size, cfg.model.in_chans)


class _StepCollate:
    """Collates images and draws the step's masks (runs inside DataLoader workers)."""

    def __init__(self, masks: Any, seed: int, rank: int, size: int,
                 chans: int) -> None:
        self.masks, self.seed, self.rank = masks, seed, rank
        self.size, self.chans = size, chans

    def __call__(self, items: list[tuple[int, Any]]) -> tuple[int, torch.Tensor, Any]:
        step = items[0][0]
        imgs = torch.stack([_item_image(it) for _, it in items])
        imgs = _model_images(imgs, self.size, self.chans)
        return step, imgs, step_masks(self.masks, len(items), self.seed, step, self.rank)


class _StepDataset(Dataset):
    """Wraps a dataset so workers see which step an index belongs to."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

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


@dataclass
class MultiCrop:
    """DINO's views of one batch of B images: ``globals`` [2B, C, S, S] (view 0 of every image,
    then view 1) and ``locals`` [n_local * B, C, s, s] (or None), grouped by view the same way."""

    globals: torch.Tensor
    locals: torch.Tensor | None
    n_images: int

    @property
    def n_views(self) -> int:
        n_local = 0 if self.locals is None else self.locals.shape[0] // self.n_images
        return 2 + n_local


def multi_crop(imgs: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> MultiCrop:
    """DINO's multi-crop: 2 global crops at the model's size (scale ``dino.global_scale``) and
    ``dino.n_local`` local crops at ``cfg.local_px`` (scale ``dino.local_scale``) of every image,
    with intensity jitter when ``dino.jitter`` > 0; batched, all numbers from ``generator``. No
    flips."""
    d = cfg.dino

    def views(n: int, scale: tuple[float, float], size: int) -> torch.Tensor:
        many = imgs.repeat(n, 1, 1, 1)  # view-major: [view 0 of all images, view 1, ...]
        crops = random_resized_crop(many, scale, generator, size=size)
        return random_intensity_jitter(crops, d.jitter, generator) if d.jitter > 0 else crops

    glob = views(2, d.global_scale, cfg.model.img_size)
    loc = views(d.n_local, d.local_scale, cfg.local_px) if d.n_local else None
    return MultiCrop(glob, loc, imgs.shape[0])


def _augment(imgs: torch.Tensor, cfg: TrainConfig, step: int,
             rank: int) -> torch.Tensor | MultiCrop:
    """The step's crops, from a generator seeded by (seed, step, rank): DINO's views, or the
    random resized crops of ``cfg.crop_scale`` (none by default)."""
    if cfg.objective != "dino" and cfg.crop_scale is None:
        return imgs
    g = torch.Generator().manual_seed(cfg.seed * 31_337 + step + rank * 1_000_003)
    if cfg.objective == "dino":
        return multi_crop(imgs, cfg, g)
    return random_resized_crop(imgs, cfg.crop_scale, g)


def step_stream(dataset: Dataset, cached: torch.Tensor | None, cfg: TrainConfig, start: int,
                masks: Any, device: torch.device, rank: int = 0,
                world_size: int = 1) -> Iterator[tuple[int, Any, Any]]:
    """Yield (step, images on ``device``, masks) for steps ``start .. cfg.steps - 1``.

    ``masks`` is the objective's sampler (see :func:`step_masks`); for DINO the images come as
    a :class:`MultiCrop` of views and the masks are None."""
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps,  # type: ignore[arg-type]
                               rank, world_size)
    if cached is not None:  # one gather per step, no per-item Python
        for step in range(start, cfg.steps):
            idx = h2d(sampler.batch(step), cached.device)
            imgs = cached.index_select(0, idx).to(device, non_blocking=True).float() / 255.0
            yield step, _augment(imgs, cfg, step, rank), step_masks(masks, len(idx), cfg.seed,
                                                                    step, rank)
        return
    collate = _StepCollate(masks, cfg.seed, rank, cfg.model.img_size, cfg.model.in_chans)
    loader = DataLoader(_StepDataset(dataset), batch_sampler=_KeyedBatches(sampler),
                        collate_fn=collate, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        worker_init_fn=worker_init)  # workers ignore Ctrl-C (radjepa_lab.runs)
    it = iter(loader)
    try:
        for step, imgs, mb in it:
            _check_range(imgs)
            yield step, _augment(imgs.to(device, non_blocking=True), cfg, step, rank), mb
    finally:
        close_loader(it)
