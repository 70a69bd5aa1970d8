"""Predicted vs target latents: what does the I-JEPA predictor actually predict?

I-JEPA has no pixel decoder, so its predictions live in feature space and cannot be looked at
directly (users asked for visualisations that never shipped, facebookresearch/ijepa #13/#45).
This module makes them visible three ways, for one image and one set of masks:

* a cosine-similarity map between each predicted target token and the real one;
* a PCA-to-RGB rendering of predicted and target tokens in ONE shared PCA basis, so equal
  colours mean similar features in both panels;
* nearest-neighbour retrieval: for each predicted token, the closest real patch tokens in a
  bank of images, shown as image crops (a "decoder" that can only copy real patches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radjepa_lab.data.transforms import as_image_batch
from radjepa_lab.errors import RadJEPALabError
from radjepa_lab.models import evaluating, predict_targets
from radjepa_lab.models import normalize_targets as layer_norm_targets

__all__ = [
    "LatentResult",
    "NNCrops",
    "PatchBank",
    "block_masks",
    "build_patch_bank",
    "nearest_patch_crops",
    "pca_rgb",
    "position_mean",
    "predict_latents",
]


@dataclass
class LatentResult:
    """Predictions of the predictor for one image against the target encoder's tokens."""

    image: np.ndarray  # [H, W]
    grid: tuple[int, int]
    patch_size: int
    context_idx: np.ndarray  # [Nc]
    target_idx: np.ndarray  # [M, K] patch indices of each target block
    predicted: np.ndarray  # [M, K, D]
    target: np.ndarray  # [M, K, D] (layer-normed target tokens at target_idx)
    all_target: np.ndarray  # [N, D] target tokens of every patch
    cosine: np.ndarray  # [M, K]
    cosine_map: np.ndarray  # [gh, gw], NaN where no target patch
    rgb_predicted: np.ndarray  # [gh, gw, 3], NaN where no target patch
    rgb_target: np.ndarray  # [gh, gw, 3] every patch
    # with a position mean: cosine of (token - mean token at its position), i.e. of what is
    # specific to THIS image, and the PCA colours of those centred tokens
    centered_cosine: np.ndarray | None = None  # [M, K]
    centered: bool = False

    @property
    def mean_cosine(self) -> float:
        return float(self.cosine.mean())

    @property
    def mean_centered_cosine(self) -> float:
        """Mean cosine after removing each position's average token (NaN without one)."""
        return float("nan") if self.centered_cosine is None else float(self.centered_cosine.mean())


def pca_rgb(
    fit_on: np.ndarray, *project: np.ndarray, clip: tuple[float, float] = (1.0, 99.0)
) -> list[np.ndarray]:
    """Project arrays ``[..., D]`` to RGB with a PCA basis fitted once on ``fit_on`` ``[N, D]``.

    The three leading components are scaled to [0, 1] with percentiles of the *fitted* set, so
    every projected array uses the same basis and the same colour scale.
    """
    from sklearn.decomposition import PCA

    fit_on = np.asarray(fit_on, dtype=np.float64)
    k = min(3, fit_on.shape[0], fit_on.shape[1])
    pca = PCA(n_components=k, random_state=0).fit(fit_on)
    ref = pca.transform(fit_on)
    lo = np.percentile(ref, clip[0], axis=0)
    hi = np.percentile(ref, clip[1], axis=0)
    out = []
    for a in project:
        a = np.asarray(a, dtype=np.float64)
        p = pca.transform(a.reshape(-1, a.shape[-1]))
        p = np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
        if k < 3:
            p = np.concatenate([p, np.zeros((len(p), 3 - k))], axis=1)
        out.append(p.reshape(*a.shape[:-1], 3))
    return out


@torch.no_grad()
def position_mean(target_encoder: nn.Module, images: np.ndarray, batch_size: int = 64,
                  normalize_targets: bool = True) -> np.ndarray:
    """The average target token at every patch position over ``images [B, H, W]``: ``[N, D]``.

    Every token carries its position's sin-cos embedding, and the predictor is told the
    positions it must fill, so much of a prediction can be "the usual token at that place".
    Subtracting this mean (``predict_latents(..., position_mean=...)``) leaves what is specific
    to one image.
    """
    imgs = np.asarray(images, np.float32)
    if imgs.ndim != 3 or len(imgs) < 2:
        raise RadJEPALabError(f"position_mean: images must be [B>=2, H, W], got {imgs.shape}")
    dev = next(target_encoder.parameters()).device
    total = None
    with evaluating(target_encoder):
        for a in range(0, len(imgs), batch_size):
            h = target_encoder(torch.from_numpy(imgs[a : a + batch_size, None]).to(dev))
            h = (layer_norm_targets(h) if normalize_targets else h).sum(0)
            total = h if total is None else total + h
    return (total / len(imgs)).cpu().numpy()


def _sample_masks(grid: tuple[int, int], mask_cfg, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from radjepa_lab.masks import MaskConfig, MultiBlockMaskSampler

    sampler = MultiBlockMaskSampler(grid, mask_cfg or MaskConfig())
    mb = sampler.sample(1, torch.Generator().manual_seed(seed))
    return mb.context[0].numpy(), mb.targets[:, 0].numpy()


@torch.no_grad()
def predict_latents(
    context_encoder: nn.Module,
    predictor: nn.Module,
    target_encoder: nn.Module,
    image: np.ndarray | torch.Tensor,
    context_idx: Sequence[int] | np.ndarray | None = None,
    target_idx: Sequence[Sequence[int]] | np.ndarray | None = None,
    mask_cfg=None,
    seed: int = 0,
    normalize_targets: bool = True,
    position_mean: np.ndarray | None = None,
) -> LatentResult:
    """Run one I-JEPA prediction step on one image and compare predictions with targets.

    Masks: pass ``context_idx`` ``[Nc]`` and ``target_idx`` ``[M, K]`` patch indices, or leave
    them ``None`` to draw them with ``masks.MultiBlockMaskSampler`` (``mask_cfg``, ``seed``).
    ``normalize_targets`` applies the layer norm I-JEPA applies to its regression targets.
    With ``position_mean`` (:func:`position_mean`, ``[N, D]``) the result also holds the cosine
    of the image-specific part (token minus the mean token at its position), and the PCA
    colours show that part instead of the position gradient every token shares.
    """
    dev = next(context_encoder.parameters()).device
    x = as_image_batch(image, "predict_latents").to(dev)
    grid = tuple(target_encoder.grid_size(x.shape[-2], x.shape[-1]))
    if context_idx is None or target_idx is None:
        context_idx, target_idx = _sample_masks(grid, mask_cfg, seed)
    ctx = torch.as_tensor(np.asarray(context_idx), dtype=torch.long, device=dev).view(1, -1)
    tgt = torch.as_tensor(np.asarray(target_idx), dtype=torch.long, device=dev)
    if tgt.ndim == 1:
        tgt = tgt[None]
    tgt = tgt[:, None, :]  # [M, 1, K]
    n = grid[0] * grid[1]
    if int(ctx.max()) >= n or int(tgt.max()) >= n or int(ctx.min()) < 0 or int(tgt.min()) < 0:
        raise RadJEPALabError(f"predict_latents: mask indices must lie in 0..{n - 1} ({grid} grid)")
    with evaluating(context_encoder, predictor, target_encoder):
        h = target_encoder(x)
        h = (layer_norm_targets(h) if normalize_targets else h)[0]  # [N, D]
        pred = predict_targets(context_encoder, predictor, x, ctx, tgt)[:, 0]  # [M, K, D]
    tgt2 = tgt[:, 0]  # [M, K]
    target = h[tgt2]  # [M, K, D]
    cos = F.cosine_similarity(pred, target, dim=-1)
    # per-patch maps (a patch in several blocks gets the mean of its predictions)
    cmap = torch.zeros(n, device=dev)
    cnt = torch.zeros(n, device=dev)
    cmap.index_add_(0, tgt2.reshape(-1), cos.reshape(-1))
    cnt.index_add_(0, tgt2.reshape(-1), torch.ones_like(cos.reshape(-1)))
    pred_sum = torch.zeros(n, pred.shape[-1], device=dev)
    pred_sum.index_add_(0, tgt2.reshape(-1), pred.reshape(-1, pred.shape[-1]))
    covered = (cnt > 0).cpu().numpy()
    cos_map = np.full(n, np.nan)
    cos_map[covered] = (cmap[cnt > 0] / cnt[cnt > 0]).cpu().numpy()
    pred_mean = (pred_sum[cnt > 0] / cnt[cnt > 0, None]).cpu().numpy()
    h_np = h.cpu().numpy()
    centered_cos = None
    if position_mean is not None:
        pm = torch.as_tensor(np.asarray(position_mean, np.float32), device=dev)
        if tuple(pm.shape) != tuple(h.shape):
            raise RadJEPALabError(f"predict_latents: position_mean must be {tuple(h.shape)} "
                                  f"([patches, width] of this encoder), got {tuple(pm.shape)}")
        centered_cos = F.cosine_similarity(pred - pm[tgt2], target - pm[tgt2], dim=-1)
        centered_cos = centered_cos.cpu().numpy()
        pm_np = pm.cpu().numpy()
        h_show, pred_show = h_np - pm_np, pred_mean - pm_np[covered]
    else:
        h_show, pred_show = h_np, pred_mean
    # shared PCA basis: fitted on real target tokens AND predictions together
    rgb_t, rgb_p = pca_rgb(np.concatenate([h_show, pred_show]), h_show, pred_show)
    rgb_pred = np.full((n, 3), np.nan)
    rgb_pred[covered] = rgb_p
    return LatentResult(
        image=x[0, 0].cpu().numpy(),
        grid=grid,
        patch_size=int(target_encoder.patch_size),
        context_idx=ctx[0].cpu().numpy(),
        target_idx=tgt2.cpu().numpy(),
        predicted=pred.cpu().numpy(),
        target=target.cpu().numpy(),
        all_target=h_np,
        cosine=cos.cpu().numpy(),
        cosine_map=cos_map.reshape(grid),
        rgb_predicted=rgb_pred.reshape(*grid, 3),
        rgb_target=rgb_t.reshape(*grid, 3),
        centered_cosine=centered_cos,
        centered=position_mean is not None,
    )


@dataclass
class PatchBank:
    """Real patch tokens of a set of images, with what is needed to cut out their crops."""

    tokens: np.ndarray  # [B*N, D] L2-normalised
    images: np.ndarray  # [B, H, W]
    grid: tuple[int, int]
    patch_size: int

    def locate(self, i: int) -> tuple[int, int, int]:
        """Bank row -> (image index, patch row, patch col)."""
        n = self.grid[0] * self.grid[1]
        img, p = divmod(int(i), n)
        return img, p // self.grid[1], p % self.grid[1]

    def crop(self, i: int, margin: int = 0) -> np.ndarray:
        """Image crop of bank row ``i`` plus ``margin`` patches of context on each side."""
        img, r, c = self.locate(i)
        p = self.patch_size
        h, w = self.images.shape[1:]
        r0, c0 = max(0, (r - margin) * p), max(0, (c - margin) * p)
        r1, c1 = min(h, (r + 1 + margin) * p), min(w, (c + 1 + margin) * p)
        out = np.full(((2 * margin + 1) * p, (2 * margin + 1) * p), np.nan, np.float32)
        ro, co = r0 - (r - margin) * p, c0 - (c - margin) * p
        out[ro : ro + r1 - r0, co : co + c1 - c0] = self.images[img, r0:r1, c0:c1]
        return out


@torch.no_grad()
def build_patch_bank(
    target_encoder: nn.Module,
    images: np.ndarray,
    batch_size: int = 64,
    normalize_targets: bool = True,
) -> PatchBank:
    """Encode ``images [B, H, W]`` in [0, 1] and keep every patch token (the retrieval bank)."""
    imgs = np.asarray(images, np.float32)
    if imgs.ndim != 3:
        raise RadJEPALabError(f"build_patch_bank: images must be [B, H, W], got {imgs.shape}")
    dev = next(target_encoder.parameters()).device
    out = []
    with evaluating(target_encoder):
        for a in range(0, len(imgs), batch_size):
            x = torch.from_numpy(imgs[a : a + batch_size, None]).to(dev)
            h = target_encoder(x)
            h = layer_norm_targets(h) if normalize_targets else h
            out.append(F.normalize(h, dim=-1).reshape(-1, h.shape[-1]).cpu().numpy())
    grid = tuple(target_encoder.grid_size(*imgs.shape[1:]))
    return PatchBank(np.concatenate(out), imgs, grid, int(target_encoder.patch_size))


@dataclass
class NNCrops:
    """For each query latent, its ``k`` nearest real patches in the bank."""

    crops: np.ndarray  # [Q, k, h, w]
    similarity: np.ndarray  # [Q, k] cosine
    index: np.ndarray  # [Q, k] bank rows
    true_crops: np.ndarray | None = None  # [Q, h, w] the real patch at each target position


def nearest_patch_crops(
    result: LatentResult,
    bank: PatchBank,
    k: int = 5,
    block: int = 0,
    max_queries: int = 8,
    margin: int = 0,
) -> NNCrops:
    """Retrieve the ``k`` most similar bank patches for predictions of target ``block``."""
    if not 0 <= block < len(result.predicted):
        raise RadJEPALabError(f"nearest_patch_crops: block {block} not in 0..{len(result.predicted) - 1}")
    q = result.predicted[block][:max_queries]
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    sim = q @ bank.tokens.T
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    crops = np.stack([np.stack([bank.crop(i, margin) for i in row]) for row in idx])
    p = result.patch_size
    true = []
    img = result.image
    for t in result.target_idx[block][:max_queries]:
        r, c = divmod(int(t), result.grid[1])
        tmp = PatchBank(np.zeros((1, 1)), img[None], result.grid, p)
        true.append(tmp.crop(r * result.grid[1] + c, margin))
    return NNCrops(crops, np.take_along_axis(sim, idx, axis=1), idx, np.stack(true))


def block_masks(
    grid: tuple[int, int], row: int, col: int, size: tuple[int, int] = (2, 2)
) -> tuple[np.ndarray, np.ndarray]:
    """Context/target indices for ONE target block of ``size`` patches at (row, col).

    The context is every other patch. Used by the latent patch picker: "predict *this* patch".
    """
    gh, gw = grid
    if not (0 <= row < gh and 0 <= col < gw):
        raise RadJEPALabError(f"block_masks: patch ({row}, {col}) is outside the {grid} grid")
    r0, c0 = min(row, gh - size[0]), min(col, gw - size[1])
    tgt = np.array([r * gw + c for r in range(r0, r0 + size[0]) for c in range(c0, c0 + size[1])])
    ctx = np.setdiff1d(np.arange(gh * gw), tgt)
    return ctx, tgt[None]

