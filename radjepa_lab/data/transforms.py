"""Preprocessing: the ONE place where the kit's intensity convention is written down.

    Every dataset in the kit yields images as float32 in [0, 1], shape [1, S, S],
    grayscale, air dark (MONOCHROME1 inverted), patient's right on the image's left.
    No mean/std normalisation happens in the data layer: the ENCODER owns it (buffers
    ``in_mean`` / ``in_std``; kit default 0.5 / 0.25; imported 3-channel models repeat the
    gray channel and use ImageNet statistics). So notebooks, analysis and datasets all pass
    [0, 1] images, and a checkpoint carries its own normalisation.

:func:`preprocess` checks that contract on the way in (finite, within [0, 1]) and keeps it on
the way out. Resizing preserves the aspect ratio: ``mode="pad"`` fits the whole image and pads
with 0 (air) to a centred square; ``mode="crop"`` fills the square and centre-crops the
excess. Resizing is torch's antialiased bilinear interpolation (it averages over the whole
footprint when shrinking a 2000 px radiograph, so no aliasing; no Pillow needed here).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from radjepa_lab.errors import DataError


def check_unit_range(img: np.ndarray, name: str = "image", tol: float = 1e-4) -> None:
    """Raise DataError unless ``img`` is finite and within [0, 1] (the kit's convention)."""
    lo, hi = float(img.min()), float(img.max())  # NaN/Inf anywhere shows up here
    if not (np.isfinite(lo) and np.isfinite(hi)):
        n = int((~np.isfinite(img)).sum())
        raise DataError(f"{name}: {n} NaN/Inf pixel(s); the file or a transform is broken.")
    if lo < -tol or hi > 1 + tol:
        raise DataError(f"{name}: values in [{lo:g}, {hi:g}] but the kit expects [0, 1]. "
                        "Rescale it first (see radjepa_lab.data.transforms).")


def equalize_histogram(img: np.ndarray, bins: int = 1024) -> np.ndarray:
    """Histogram equalisation on [0, 1] floats (maps each value to its CDF)."""
    hist, edges = np.histogram(img, bins=bins, range=(0.0, 1.0))
    cdf = np.cumsum(hist).astype(np.float64)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
    idx = np.clip((img * bins).astype(np.int64), 0, bins - 1)
    return cdf[idx].astype(np.float32)


def resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float32 [H, W] image to ``hw`` (rows, cols)."""
    th, tw = hw
    if img.shape == (th, tw):
        return img.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    return out[0, 0].clamp_(0.0, 1.0).numpy()


def preprocess(img: np.ndarray, size: int, mode: Literal["pad", "crop"] = "pad",
               equalize: bool = False, name: str = "image") -> np.ndarray:
    """[H, W] in [0, 1] -> float32 [size, size] in [0, 1], aspect ratio preserved."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2 or min(img.shape) < 1:
        raise DataError(f"{name}: expected a 2-D grayscale image, got shape {img.shape}.")
    if mode not in ("pad", "crop"):
        raise DataError(f"{name}: mode={mode!r}; use 'pad' or 'crop'.")
    if int(size) != size or size < 1:
        raise DataError(f"{name}: size={size!r} must be a positive integer.")
    img = img.astype(np.float32, copy=False)
    check_unit_range(img, name)
    h, w = img.shape
    scale = size / max(h, w) if mode == "pad" else size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if mode == "pad":
        nh, nw = min(nh, size), min(nw, size)
    else:
        nh, nw = max(nh, size), max(nw, size)
    out = resize(img, (nh, nw))
    if equalize:
        out = equalize_histogram(out)
    if mode == "crop":
        r0, c0 = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(out[r0 : r0 + size, c0 : c0 + size])
    canvas = np.zeros((size, size), np.float32)
    r0, c0 = (size - nh) // 2, (size - nw) // 2
    canvas[r0 : r0 + nh, c0 : c0 + nw] = out
    return canvas


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """float32 [S, S] -> FloatTensor [1, S, S] (shares memory)."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).unsqueeze(0)


def resize_batch(x: np.ndarray | torch.Tensor, size: int,
                 nearest: bool = False) -> np.ndarray | torch.Tensor:
    """The kit's one batch resize: ``[..., H, W]`` images -> ``[..., size, size]``.

    Area averaging when shrinking (no aliasing), bilinear when enlarging; ``nearest=True`` is
    for label masks and returns booleans. Arrays come back as arrays, tensors as tensors; a
    batch already at ``size`` is returned as it is.
    """
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    is_array = not torch.is_tensor(x)
    t = torch.from_numpy(np.asarray(x, np.float32)) if is_array else x.float()
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    mode = "nearest" if nearest else ("area" if t.shape[-1] > size else "bilinear")
    out = F.interpolate(t, size=(size, size), mode=mode).reshape(*lead, size, size)
    if nearest:
        out = out > 0.5
    return out.numpy() if is_array else out


def as_image_batch(image: np.ndarray | torch.Tensor, where: str = "",
                   single: bool = True) -> torch.Tensor:
    """An image ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]`` (array or tensor) as a float
    ``[B, C, H, W]`` tensor; with ``single`` it must be ONE image, because the per-image
    analyses (attention, latents) return one map, not a batch of them."""
    x = image if torch.is_tensor(image) else torch.from_numpy(np.asarray(image, np.float32))
    x = x.float()
    while x.ndim < 4:
        x = x.unsqueeze(0)
    if single and x.shape[0] != 1:
        raise DataError(
            f"{where or 'as_image_batch'}: pass ONE image ([H,W], [1,H,W] or [1,1,H,W]), "
            f"got shape {tuple(x.shape)}"
        )
    return x


def random_resized_crop(imgs: torch.Tensor, scale: tuple[float, float],
                        generator: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        size: int | None = None) -> torch.Tensor:
    """I-JEPA's pretraining augmentation (RandomResizedCrop) on a whole batch ``[B, C, H, W]``.

    Every image gets its own crop box, covering a fraction ``scale`` of its area with an aspect
    ratio in ``ratio``, resized to ``size x size`` (default: back to ``H x W``) by one bilinear
    ``grid_sample``. All numbers come from ``generator``, so a step's crops are a pure function
    of its seed; torchvision's transform draws from the global RNG and one box per call, hence
    this batched version. DINO's global and local crops are this function at two scales and
    two sizes.
    """
    b = imgs.shape[0]
    u = torch.rand(3, b, generator=generator, dtype=torch.float64)
    area = scale[0] + u[0] * (scale[1] - scale[0])
    log_r = np.log(ratio[0]) + u[1] * (np.log(ratio[1]) - np.log(ratio[0]))
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # box width and height as fractions of the image
    h = torch.sqrt(area / r).clamp(max=1.0)
    centre = torch.rand(2, b, generator=generator, dtype=torch.float64)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 1, 1] = w, h
    theta[:, 0, 2] = (centre[0] * 2 - 1) * (1 - w)  # box centre, anywhere the box fits
    theta[:, 1, 2] = (centre[1] * 2 - 1) * (1 - h)
    shape = list(imgs.shape) if size is None else [b, imgs.shape[1], size, size]
    grid = F.affine_grid(theta.to(imgs.dtype), shape, align_corners=False)
    return F.grid_sample(imgs, grid.to(imgs.device), mode="bilinear", align_corners=False)


def random_intensity_jitter(imgs: torch.Tensor, strength: float, generator: torch.Generator,
                            p: float = 0.8) -> torch.Tensor:
    """DINO's colour jitter for gray images: with probability ``p`` per image, brightness and
    contrast factors drawn from ``[1 - strength, 1 + strength]`` (torchvision's ColorJitter
    order: brightness scales the image, contrast pulls it towards its mean). Stays in [0, 1].
    """
    b = imgs.shape[0]
    u = torch.rand(3, b, generator=generator, dtype=torch.float64)
    on = (u[0] < p).to(imgs.dtype).view(-1, 1, 1, 1).to(imgs.device)
    bright = (1 + strength * (2 * u[1] - 1)).to(imgs.dtype).view(-1, 1, 1, 1).to(imgs.device)
    contrast = (1 + strength * (2 * u[2] - 1)).to(imgs.dtype).view(-1, 1, 1, 1).to(imgs.device)
    x = (imgs * bright).clamp(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    return on * x + (1 - on) * imgs
