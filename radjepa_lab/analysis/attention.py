"""Attention maps from timm blocks: per-head maps, attention received and rollout without CLS.

timm computes attention with fused ``scaled_dot_product_attention`` and never materialises the
weights. :func:`capture_attention` turns fusion off *only while capturing*, hooks the
``attn_drop`` module (whose input is exactly ``softmax(q k^T / sqrt(d))``) and restores
everything on exit, so the model's outputs and speed are unchanged afterwards.

Rollout (Abnar & Zuidema 2020) is usually read from the CLS row. Kit and I-JEPA encoders have
no CLS token, so we read it from a chosen *query patch* (what does this patch's final token
mix in from the image?) or average over all patches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radjepa_lab.data.transforms import as_image_batch
from radjepa_lab.errors import RadJEPALabError
from radjepa_lab.models import evaluating

__all__ = [
    "AttentionResult",
    "AttentionStore",
    "attention_maps",
    "attention_received",
    "attention_rollout",
    "capture_attention",
    "query_attention",
    "rollout_map",
    "upsample_map",
]


@dataclass
class AttentionStore:
    """Filled by :func:`capture_attention`: one ``[B, heads, T, T]`` tensor per block."""

    maps: list[torch.Tensor | None] = field(default_factory=list)


def _qkv_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Recompute softmax(q k^T * scale) from a timm Attention module's input (fallback path)."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, _v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


@contextmanager
def capture_attention(
    model: nn.Module, blocks: Sequence[nn.Module] | None = None
) -> Iterator[AttentionStore]:
    """Context manager that records attention weights of every block during forwards.

    ``with capture_attention(encoder) as store: encoder(x)`` leaves ``store.maps[i]`` as the
    ``[B, heads, T, T]`` attention of block ``i`` (T includes prefix tokens, if any) for the last
    forward. On exit the hooks are removed and each block's ``fused_attn`` flag is restored.
    """
    blocks = list(model.blocks if blocks is None else blocks)
    store = AttentionStore([None] * len(blocks))
    handles = []
    saved: list[tuple[nn.Module, bool | None]] = []
    try:
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if attn is None or not hasattr(attn, "qkv"):
                raise RadJEPALabError(
                    f"capture_attention: block {i} has no timm-style .attn.qkv; only timm "
                    "Attention modules are supported"
                )
            saved.append((attn, getattr(attn, "fused_attn", None)))
            drop = getattr(attn, "attn_drop", None)
            if hasattr(attn, "fused_attn") and isinstance(drop, nn.Module):
                attn.fused_attn = False

                def hook(_m, inputs, _out, i=i):
                    store.maps[i] = inputs[0].detach()

                handles.append(drop.register_forward_hook(hook))
            else:  # unknown attention variant: recompute from the module's input

                def pre(m, args, _out, i=i):
                    with torch.no_grad():
                        store.maps[i] = _qkv_attention(m, args[0]).detach()

                handles.append(attn.register_forward_hook(pre))
        yield store
    finally:
        for h in handles:
            h.remove()
        for attn, flag in saved:
            if flag is not None:
                attn.fused_attn = flag


@dataclass
class AttentionResult:
    """Attention of one image through every block, patch tokens only (prefix removed)."""

    attn: np.ndarray  # [L, H, N, N] rows = queries, cols = keys, over patch tokens
    grid: tuple[int, int]
    image: np.ndarray  # [H, W] in [0, 1]
    prefix_attn: np.ndarray | None = None  # [L, H, N] attention each patch pays to prefix tokens

    @property
    def n_layers(self) -> int:
        return self.attn.shape[0]

    @property
    def n_heads(self) -> int:
        return self.attn.shape[1]


@torch.no_grad()
def attention_maps(encoder: nn.Module, image: np.ndarray | torch.Tensor) -> AttentionResult:
    """Run ``encoder`` on one image in [0, 1] and return all attention weights."""
    x = as_image_batch(image, "attention_maps").to(next(encoder.parameters()).device)
    with evaluating(encoder), capture_attention(encoder) as store:
        encoder(x)
    p = int(getattr(encoder, "num_prefix_tokens", 0))
    full = torch.stack([m[0] for m in store.maps]).float().cpu()  # [L,H,T,T]
    patch = full[:, :, p:, p:]
    grid = encoder.grid_size(x.shape[-2], x.shape[-1])
    pref = full[:, :, p:, :p].sum(-1).numpy() if p else None
    return AttentionResult(patch.numpy(), tuple(grid), x[0, 0].cpu().numpy(), pref)


def _query_index(query: int | tuple[int, int], grid: tuple[int, int]) -> int:
    if isinstance(query, tuple | list):
        r, c = query
        if not (0 <= r < grid[0] and 0 <= c < grid[1]):
            raise RadJEPALabError(f"query patch {query} is outside the {grid} patch grid")
        return int(r) * grid[1] + int(c)
    if not 0 <= query < grid[0] * grid[1]:
        raise RadJEPALabError(f"query index {query} is outside 0..{grid[0] * grid[1] - 1}")
    return int(query)


def query_attention(res: AttentionResult, query: int | tuple[int, int]) -> np.ndarray:
    """``[L, H, gh, gw]``: where the query patch looks, per layer and head."""
    q = _query_index(query, res.grid)
    return res.attn[:, :, q, :].reshape(res.n_layers, res.n_heads, *res.grid)


def attention_received(res: AttentionResult) -> np.ndarray:
    """``[L, gh, gw]``: mean attention each patch *receives* (over heads and queries).

    Patches that every query attends to are "sinks"; in ViTs without registers they often sit
    on uninformative background.
    """
    return res.attn.mean(axis=(1, 2)).reshape(res.n_layers, *res.grid)


def attention_rollout(
    attn: np.ndarray, head_fusion: str = "mean", residual_weight: float = 0.5
) -> np.ndarray:
    """Attention rollout ``[N, N]`` from per-layer attention ``[L, H, N, N]``.

    Per layer the heads are fused (mean, max or min), the residual stream is added as
    ``w*I + (1-w)*A`` and rows renormalised, then the layers are multiplied in order, so row
    ``q`` is the share of each input patch in output token ``q``. Every row sums to 1.
    """
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise RadJEPALabError(f"attention_rollout: expected [L, H, N, N], got {a.shape}")
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}.get(head_fusion)
    if fuse is None:
        raise RadJEPALabError(f"attention_rollout: head_fusion must be mean/max/min, got {head_fusion!r}")
    n = a.shape[-1]
    eye = np.eye(n)
    r = eye.copy()
    for layer in a:
        m = fuse(layer, axis=0)
        m = residual_weight * eye + (1 - residual_weight) * m
        m = m / m.sum(axis=-1, keepdims=True)
        r = m @ r
    return r


def rollout_map(
    res: AttentionResult,
    query: int | tuple[int, int] | None = None,
    head_fusion: str = "mean",
    residual_weight: float = 0.5,
) -> np.ndarray:
    """``[gh, gw]`` rollout for one query patch, or averaged over all patches (``None``)."""
    r = attention_rollout(res.attn, head_fusion, residual_weight)
    v = r.mean(axis=0) if query is None else r[_query_index(query, res.grid)]
    return v.reshape(res.grid)


def upsample_map(m: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Upsample a ``[gh, gw]`` map to image ``size`` for overlays (bilinear or nearest)."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=size, mode=mode, **kw)[0, 0].numpy()
