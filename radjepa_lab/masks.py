"""I-JEPA multi-block masks: one context block, M target blocks, on any patch grid.

Semantics follow I-JEPA (paper defaults below) with three deliberate changes, each
visible in a test:

* **No border bias.** The reference draws a block's top-left corner from
  ``range(H - h)``, so blocks never touch the last row or column (ijepa #60, #40) and a
  block can never span the full grid. Here corners come from ``range(H - h + 1)``.
* **Independent scale and aspect draws.** The reference reuses one uniform number for
  both, tying large blocks to tall shapes. Here they are drawn separately.
* **Context equalisation without starvation.** Batches need equal-length index tensors.
  The reference truncates every context to the batch minimum *in raster order*, which
  on a 64-token grid left 9-18 tokens and always dropped the bottom of the image. Here
  every context is first guaranteed ``min_keep`` tokens (the context block is redrawn,
  then the targets, until it holds that many), and the default ``equalize="subsample"``
  keeps a uniformly random subset of K = batch-minimum tokens, so no image region is
  systematically dropped. ``equalize="truncate"`` reproduces the reference.

``min_keep`` bounds the context only: target blocks are whole rectangles whose size is
set by ``pred_scale`` (the reference also applied it to targets, which loops forever
when a target block is smaller than ``min_keep``, as on small grids).

:class:`RandomPatchMasker` is MAE's masking, for the comparison of notebook 09: every patch
is hidden independently of its neighbours, a fixed share of them per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from radjepa_lab.config import MaskConfig
from radjepa_lab.errors import ConfigError

__all__ = [
    "BorderBiasedSampler",
    "MaskBatch",
    "MaskConfig",
    "MultiBlockMaskSampler",
    "PatchMasks",
    "RandomPatchMasker",
    "coverage_heatmap",
    "ratio_histograms",
]

@dataclass
class MaskBatch:
    """Index tensors (row-major patch indices) plus the raw blocks for figures.

    context: [B, Nc]; targets: [M, B, Nt]; *_sizes are the counts BEFORE equalisation;
    boxes are (top, left, height, width) of the drawn blocks.
    """

    context: torch.Tensor
    targets: torch.Tensor
    grid: tuple[int, int]
    context_sizes: torch.Tensor
    target_sizes: torch.Tensor
    context_boxes: torch.Tensor
    target_boxes: torch.Tensor

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def context_mask(self) -> torch.Tensor:
        """Bool [B, N]: tokens the context encoder sees."""
        out = torch.zeros(self.context.shape[0], self.num_patches, dtype=torch.bool)
        return out.scatter_(1, self.context.cpu(), True)

    def target_mask(self) -> torch.Tensor:
        """Bool [M, B, N]: tokens each target block asks the predictor for."""
        m, b, _ = self.targets.shape
        out = torch.zeros(m, b, self.num_patches, dtype=torch.bool)
        return out.scatter_(2, self.targets.cpu(), True)

    def to(self, device: torch.device | str) -> MaskBatch:
        return MaskBatch(
            self.context.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
            self.grid, self.context_sizes, self.target_sizes, self.context_boxes,
            self.target_boxes,
        )


class MultiBlockMaskSampler:
    """Draws I-JEPA context/target blocks for a ``grid=(rows, cols)`` of patches.

    Vectorised over the batch (no per-sample Python loop), so it is cheap enough to run
    in the training process or a DataLoader collate function. Deterministic: all
    randomness comes from the ``generator`` passed to :meth:`sample`.
    """

    def __init__(self, grid: tuple[int, int], cfg: MaskConfig | None = None) -> None:
        self.grid = (int(grid[0]), int(grid[1]))
        if min(self.grid) < 1:
            raise ConfigError(f"MultiBlockMaskSampler: grid {grid} must be at least 1x1.")
        self.cfg = cfg or MaskConfig()
        n = self.grid[0] * self.grid[1]
        if self.cfg.min_keep > n:
            raise ConfigError(
                f"MaskConfig.min_keep={self.cfg.min_keep} exceeds the {n} patches of grid "
                f"{self.grid}; lower min_keep."
            )

    # -- geometry -----------------------------------------------------------------------------
    def block_size(
        self,
        scale: tuple[float, float],
        aspect: tuple[float, float],
        n: int,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` block (height, width) pairs: area = scale * grid, height/width = aspect."""
        gh, gw = self.grid
        u = torch.rand(2, n, generator=generator, dtype=torch.float64)
        s = scale[0] + u[0] * (scale[1] - scale[0])
        a = aspect[0] + u[1] * (aspect[1] - aspect[0])
        area = torch.floor(gh * gw * s)
        h = torch.round(torch.sqrt(area * a)).clamp(1, gh).long()
        w = torch.round(torch.sqrt(area / a)).clamp(1, gw).long()
        return h, w

    def place(
        self, h: torch.Tensor, w: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Uniform top-left corners over ALL valid positions, last row/column included."""
        gh, gw = self.grid
        u = torch.rand(2, *h.shape, generator=generator, dtype=torch.float64)
        top = torch.floor(u[0] * (gh - h + 1)).long().clamp_max(gh - h)
        left = torch.floor(u[1] * (gw - w + 1)).long().clamp_max(gw - w)
        return torch.stack([top, left, h, w], dim=-1)

    def rasterise(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes [..., 4] -> bool masks [..., N] (row-major)."""
        gh, gw = self.grid
        t, lft, h, w = boxes.unbind(-1)
        rows = torch.arange(gh).view(*([1] * t.ndim), gh, 1)
        cols = torch.arange(gw).view(*([1] * t.ndim), 1, gw)
        ex = (...,) + (None, None)
        m = (rows >= t[ex]) & (rows < (t + h)[ex]) & (cols >= lft[ex]) & (cols < (lft + w)[ex])
        return m.flatten(-2)

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> MaskBatch:
        """One batch of masks; equal lengths across the batch (see module docstring)."""
        cfg, b, m = self.cfg, batch_size, self.cfg.n_targets
        nb = b * m if cfg.per_sample else 1
        th, tw = self.block_size(cfg.pred_scale, cfg.pred_aspect, nb, generator)
        th, tw = th.expand(b * m).reshape(b, m), tw.expand(b * m).reshape(b, m)
        ch, cw = self.block_size(cfg.enc_scale, cfg.enc_aspect, b if cfg.per_sample else 1,
                                 generator)
        ch, cw = ch.expand(b), cw.expand(b)

        tboxes = self.place(th, tw, generator)  # [B, M, 4]
        cboxes = self.place(ch, cw, generator)  # [B, 4]
        ctx = self._context(cboxes, tboxes)
        bad = ctx.sum(1) < cfg.min_keep
        tries = 0
        stacked = False
        while bad.any():
            tries += 1
            idx = bad.nonzero().squeeze(1)
            if tries > cfg.max_tries and not stacked:
                # Rare unlucky draws (e.g. four disjoint targets inside a small context block)
                # must not kill a long run: fall back to stacking the sample's targets on its
                # first one, which frees the most context, and keep redrawing the context.
                tboxes[idx] = tboxes[idx, :1].expand(-1, m, -1).clone()
                stacked, tries = True, 0
            elif tries > cfg.max_tries:
                raise ConfigError(
                    f"Could not give every context >= min_keep={cfg.min_keep} of "
                    f"{ctx.shape[1]} patches (grid {self.grid}) in {cfg.max_tries} redraws; "
                    "lower MaskConfig.min_keep, pred_scale or n_targets, or raise enc_scale."
                )
            cboxes[idx] = self.place(ch[idx], cw[idx], generator)
            if tries % 10 == 0 and not stacked:  # targets leave too little room: redraw them
                tboxes[idx] = self.place(th[idx], tw[idx], generator)
            ctx[idx] = self._context(cboxes[idx], tboxes[idx])
            bad = ctx.sum(1) < cfg.min_keep

        tmask = self.rasterise(tboxes).transpose(0, 1)  # [M, B, N]
        context = self._equalise(ctx, generator)
        targets = self._equalise(tmask.reshape(m * b, -1), generator).view(m, b, -1)
        return MaskBatch(
            context=context, targets=targets, grid=self.grid, context_sizes=ctx.sum(1),
            target_sizes=tmask.sum(-1), context_boxes=cboxes, target_boxes=tboxes.transpose(0, 1),
        )

    __call__ = sample

    def _context(self, cboxes: torch.Tensor, tboxes: torch.Tensor) -> torch.Tensor:
        ctx = self.rasterise(cboxes)
        if not self.cfg.allow_overlap:
            ctx &= ~self.rasterise(tboxes).any(1)
        return ctx

    def _equalise(self, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Bool [R, N] -> indices [R, K], K = min count: random subset or raster prefix."""
        k = int(mask.sum(1).min())
        if self.cfg.equalize == "subsample":
            key = torch.rand(mask.shape, generator=generator)
        else:
            key = torch.arange(mask.shape[1], dtype=torch.float32).expand(mask.shape)
        key = key.masked_fill(~mask, float("inf"))
        idx = key.topk(k, dim=1, largest=False).indices
        return idx.sort(dim=1).values


class BorderBiasedSampler(MultiBlockMaskSampler):
    """The reference I-JEPA block placement, kept ONLY to show its bias in 01_masking_sampler.

    facebookresearch/ijepa draws a corner with ``torch.randint(0, H - h)``: one position
    short, so no block ever touches the last row or column (ijepa #60, #40). The kit's
    :meth:`MultiBlockMaskSampler.place` draws from ``H - h + 1`` positions instead.
    """

    def place(self, h: torch.Tensor, w: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        gh, gw = self.grid
        u = torch.rand(2, *h.shape, generator=generator, dtype=torch.float64)
        top = torch.floor(u[0] * (gh - h).clamp_min(1)).long()  # range(gh - h): bias
        left = torch.floor(u[1] * (gw - w).clamp_min(1)).long()
        return torch.stack([top, left, h, w], dim=-1)


# ----------------------------------------------------------------------------- MAE's masks


@dataclass
class PatchMasks:
    """MAE's split of every image's patches: ``keep`` [B, K] visible (the encoder's input) and
    ``masked`` [B, N - K] hidden (what the decoder reconstructs), each sorted row-major."""

    keep: torch.Tensor
    masked: torch.Tensor
    grid: tuple[int, int]

    def to(self, device: torch.device | str) -> PatchMasks:
        return PatchMasks(self.keep.to(device, non_blocking=True),
                          self.masked.to(device, non_blocking=True), self.grid)


class RandomPatchMasker:
    """MAE's random masking: per image, a uniformly random ``ratio`` of the patches is hidden.

    As MAE's ``random_masking`` (argsort of uniform noise), but drawn from the step's seeded
    generator so a run's masks are a pure function of (seed, step, rank) like I-JEPA's. The
    encoder sees ``K = round(N (1 - ratio))`` patches (at least one, at most N - 1).
    """

    def __init__(self, grid: tuple[int, int], ratio: float = 0.75) -> None:
        if not 0.0 < ratio < 1.0:
            raise ConfigError(f"MAE mask ratio {ratio} must lie in (0, 1).")
        self.grid, self.ratio = tuple(grid), ratio
        n = self.grid[0] * self.grid[1]
        self.n_keep = min(n - 1, max(1, round(n * (1.0 - ratio))))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> PatchMasks:
        n = self.grid[0] * self.grid[1]
        order = torch.rand(batch_size, n, generator=generator).argsort(dim=1)
        keep, masked = order[:, : self.n_keep], order[:, self.n_keep :]
        return PatchMasks(keep.sort(dim=1).values, masked.sort(dim=1).values, self.grid)


# ----------------------------------------------------------------------------- statistics


def _batches(sampler: MultiBlockMaskSampler, n_batches: int, batch_size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        yield sampler.sample(batch_size, g)


def coverage_heatmap(
    sampler: MultiBlockMaskSampler,
    which: str = "target",
    n_batches: int = 50,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Probability [rows, cols] that a patch is in a target block (or in the context).

    ``which="target"`` counts a patch once if any target block covers it; a flat map
    means no border bias. ``which="context"`` uses the equalised context indices.
    """
    if which not in ("target", "context"):
        raise ConfigError(f"coverage_heatmap(which={which!r}): use 'target' or 'context'.")
    acc = torch.zeros(sampler.grid[0] * sampler.grid[1], dtype=torch.float64)
    total = 0
    for mb in _batches(sampler, n_batches, batch_size, seed):
        mask = mb.target_mask().any(0) if which == "target" else mb.context_mask()
        acc += mask.sum(0)
        total += mask.shape[0]
    return (acc / max(total, 1)).view(sampler.grid).numpy()


def ratio_histograms(
    sampler: MultiBlockMaskSampler,
    n_batches: int = 50,
    batch_size: int = 64,
    seed: int = 0,
    bins: int = 20,
) -> dict[str, np.ndarray]:
    """Per-sample fractions of the grid, and their histograms on [0, 1].

    Keys: ``context_raw`` (context before equalisation), ``context`` (tokens the encoder
    actually sees), ``target`` (union of target blocks), ``edges`` and ``*_hist`` counts.
    """
    n = sampler.grid[0] * sampler.grid[1]
    raw, kept, tgt = [], [], []
    for mb in _batches(sampler, n_batches, batch_size, seed):
        raw.append(mb.context_sizes.double() / n)
        kept.append(torch.full((mb.context.shape[0],), mb.context.shape[1] / n))
        tgt.append(mb.target_mask().any(0).sum(1).double() / n)
    out = {
        "context_raw": torch.cat(raw).numpy(),
        "context": torch.cat(kept).double().numpy(),
        "target": torch.cat(tgt).numpy(),
    }
    edges = np.linspace(0.0, 1.0, bins + 1)
    for key in ("context_raw", "context", "target"):
        out[f"{key}_hist"] = np.histogram(out[key], bins=edges)[0]
    out["edges"] = edges
    return out
