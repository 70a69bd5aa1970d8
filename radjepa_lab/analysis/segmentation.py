"""Segmentation probe: a linear 1x1 head on frozen patch tokens, scored with Dice.

This mirrors RadJEPA's lung / rib segmentation probes at teaching scale: if a *linear* map of
each patch token, bilinearly upsampled, can outline the lungs and heart, the encoder has kept
that spatial anatomy in its tokens. Tokens come as ``[N, gh, gw, D]`` arrays (see
``analysis.embed``); masks as ``[N, S, H, W]`` booleans (phantom STRUCTURES order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radjepa_lab.analysis.metrics import as_numpy
from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "LinearSegHead",
    "SegResult",
    "dice",
    "dice_per_structure",
    "evaluate_seg_head",
    "predict_masks",
    "train_seg_head",
]


def dice(pred: np.ndarray, target: np.ndarray, empty: float = 1.0) -> float:
    """Dice = 2|P∩T| / (|P|+|T|) of two boolean masks; ``empty`` when both are empty."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(target, dtype=bool)
    denom = p.sum() + t.sum()
    if denom == 0:
        return float(empty)
    return float(2.0 * np.logical_and(p, t).sum() / denom)


def dice_per_structure(
    pred: np.ndarray, target: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """Mean over images of the per-image Dice, for each structure channel of ``[N, S, H, W]``."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != len(names):
        raise RadJEPALabError(
            f"dice_per_structure: pred {pred.shape} / target {target.shape} must both be "
            f"[N, {len(names)}, H, W]"
        )
    inter = np.logical_and(pred, target).sum(axis=(2, 3)).astype(np.float64)
    denom = (pred.sum(axis=(2, 3)) + target.sum(axis=(2, 3))).astype(np.float64)
    d = np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)
    return {n: float(d[:, i].mean()) for i, n in enumerate(names)}


class LinearSegHead(nn.Module):
    """Per-patch linear classifier (a 1x1 conv) + bilinear upsampling to the image size.

    Token features are standardised with training-set statistics held in buffers, which makes
    the optimisation insensitive to the encoder's feature scale (random-init and trained encoders
    differ by orders of magnitude there).
    """

    def __init__(self, dim: int, n_structures: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, n_structures, kernel_size=1)
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sigma", torch.ones(dim))

    def forward(self, tokens: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``tokens [N, gh, gw, D]`` -> logits ``[N, S, H, W]`` (``[N, S, gh, gw]`` w/o size)."""
        z = (tokens - self.mu) / self.sigma
        logits = self.conv(z.permute(0, 3, 1, 2))
        if out_size is not None:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


@dataclass
class SegResult:
    """Dice per structure on a test set, with the fitted head and the training loss curve."""

    dice: dict[str, float]
    head: LinearSegHead
    losses: list[float] = field(default_factory=list)
    pred: np.ndarray | None = None  # [N, S, H, W] bool, kept only when asked

    @property
    def mean_dice(self) -> float:
        """Mean Dice over structures."""
        return float(np.mean(list(self.dice.values())))


def train_seg_head(
    tokens: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    epochs: int = 30,
    lr: float = 5e-2,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    seed: int = 0,
    progress: bool = False,
) -> tuple[LinearSegHead, list[float]]:
    """Train a :class:`LinearSegHead` with per-structure sigmoid BCE at image resolution.

    Each structure is an independent sigmoid (structures may overlap, e.g. ribs over lungs).
    The loss is computed after upsampling, so the head learns sub-patch boundaries as far as a
    linear map of the tokens allows.
    """
    tok = torch.as_tensor(as_numpy(tokens), dtype=torch.float32)
    msk = torch.as_tensor(as_numpy(masks).astype(np.float32))
    if tok.ndim != 4 or msk.ndim != 4 or len(tok) != len(msk):
        raise RadJEPALabError(
            f"train_seg_head: tokens must be [N, gh, gw, D] and masks [N, S, H, W]; "
            f"got {tuple(tok.shape)} and {tuple(msk.shape)}"
        )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = LinearSegHead(tok.shape[-1], msk.shape[1])
    flat = tok.reshape(-1, tok.shape[-1])
    head.mu.copy_(flat.mean(0))
    head.sigma.copy_(flat.std(0).clamp_min(1e-6))
    # start each structure at its prevalence so early epochs are not spent on the bias
    prev = msk.mean(dim=(0, 2, 3)).clamp(1e-4, 1 - 1e-4)
    with torch.no_grad():
        head.conv.bias.copy_(torch.log(prev / (1 - prev)))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    size = tuple(msk.shape[-2:])
    losses: list[float] = []
    from tqdm.auto import trange

    for _ in trange(epochs, desc="segmentation head", disable=not progress, leave=False):
        perm = torch.randperm(len(tok), generator=gen)
        total = 0.0
        for a in range(0, len(tok), batch_size):
            i = perm[a : a + batch_size]
            loss = F.binary_cross_entropy_with_logits(head(tok[i], size), msk[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(i)
        losses.append(total / len(tok))
    head.eval()
    return head, losses


@torch.no_grad()
def predict_masks(
    head: LinearSegHead, tokens: np.ndarray | torch.Tensor, size: tuple[int, int]
) -> np.ndarray:
    """Boolean masks ``[N, S, H, W]`` (sigmoid > 0.5)."""
    tok = torch.as_tensor(as_numpy(tokens), dtype=torch.float32)
    return np.concatenate(
        [(head(tok[a : a + 256], size) > 0).numpy() for a in range(0, len(tok), 256)]
    )


def evaluate_seg_head(
    train_tokens: np.ndarray,
    train_masks: np.ndarray,
    test_tokens: np.ndarray,
    test_masks: np.ndarray,
    names: Sequence[str],
    epochs: int = 30,
    seed: int = 0,
    keep_pred: bool = False,
    batch_size: int = 64,
    lr: float = 5e-2,
    progress: bool = False,
) -> SegResult:
    """Fit the head on train tokens/masks and report Dice per structure on the test set."""
    head, losses = train_seg_head(
        train_tokens, train_masks, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        progress=progress,
    )
    test_masks = np.asarray(as_numpy(test_masks), dtype=bool)
    pred = predict_masks(head, test_tokens, tuple(test_masks.shape[-2:]))
    d = dice_per_structure(pred, test_masks, names)
    return SegResult(d, head, losses, pred if keep_pred else None)

