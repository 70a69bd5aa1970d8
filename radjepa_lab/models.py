"""Masked ViT encoder and I-JEPA predictor on timm building blocks, their builders and pooling.

The encoder owns input normalisation (buffers ``in_mean``/``in_std``): callers always
pass images in [0, 1]. Position embeddings are a fixed 2-D sin-cos buffer laid out as
in I-JEPA, kept for the patch grid only; prefix tokens (CLS/registers of imported
DINOv2 models) carry their position inside the token itself, so interpolating to a new
grid never has to guess whether a CLS row exists (the reference's
``interpolate_pos_encoding`` assumed one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block

from radjepa_lab.config import ENCODER_INITS, ModelConfig
from radjepa_lab.errors import ConfigError

__all__ = [
    "Predictor",
    "VisionTransformer",
    "apply_masks",
    "build_encoder",
    "build_predictor",
    "evaluating",
    "normalize_targets",
    "pooled_embedding",
    "predict_targets",
    "sincos_pos_embed",
]

def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding [1, gh*gw, dim] in I-JEPA's layout.

    I-JEPA puts ``[sin(x w), cos(x w)]`` of the column coordinate in the first half and the
    row coordinate in the second half. timm builds the same frequencies; with
    ``interleave_sin_cos`` its halves are (row, column), so we swap them.
    """
    if dim % 4:
        raise ConfigError(f"sin-cos position embedding needs a width divisible by 4, got {dim}.")
    pe = build_sincos2d_pos_embed(list(grid), dim=dim, interleave_sin_cos=True)
    pe = torch.cat([pe[:, dim // 2 :], pe[:, : dim // 2]], dim=1)
    return pe.unsqueeze(0)


def apply_masks(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather tokens: x [B, N, D], idx [B, K] or [M, B, K] -> [B, K, D] or [M, B, K, D].

    Advanced indexing broadcasts the batch index, so M target sets never copy x M times.
    """
    rows = torch.arange(x.shape[0], device=x.device).view(-1, 1)
    return x[rows, idx]


def _norm_layer(eps: float) -> Any:
    return partial(nn.LayerNorm, eps=eps)


class VisionTransformer(nn.Module):
    """ViT encoder (timm ``Block``/``PatchEmbed``) with masked forward and any input size.

    ``num_prefix_tokens`` is 0 for kit and I-JEPA models (no CLS); imported DINOv2 /
    Rad-DINO models have 1 CLS token plus ``num_register_tokens`` registers.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 64,
        patch_size: int = 8,
        in_chans: int = 1,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        init_values: float | None = None,
        class_token: bool = False,
        num_register_tokens: int = 0,
        in_mean: Sequence[float] = (0.5,),
        in_std: Sequence[float] = (0.25,),
    ) -> None:
        super().__init__()
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = patch_size
        self.embed_dim = self.num_features = embed_dim
        self.in_chans = in_chans
        self.num_heads = num_heads
        self.patch_embed = PatchEmbed(
            img_size=img_hw, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            strict_img_size=False,
        )
        self.pos_grid: tuple[int, int] = tuple(self.patch_embed.grid_size)  # type: ignore[assignment]
        self.register_buffer("pos_embed", sincos_pos_embed(embed_dim, self.pos_grid))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
            if num_register_tokens
            else None
        )
        self.num_prefix_tokens = int(class_token) + num_register_tokens
        dpr = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                drop_path=dpr[i], init_values=init_values, norm_layer=_norm_layer(norm_eps),
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        if len(in_mean) not in (1, in_chans) or len(in_std) not in (1, in_chans):
            raise ConfigError(f"in_mean/in_std need 1 or {in_chans} values.")
        mean = torch.tensor(in_mean, dtype=torch.float32).expand(in_chans).clone()
        std = torch.tensor(in_std, dtype=torch.float32).expand(in_chans).clone()
        self.register_buffer("in_mean", mean.view(1, -1, 1, 1))
        self.register_buffer("in_std", std.view(1, -1, 1, 1))

    # -- helpers ---------------------------------------------------------------------------
    def grid_size(self, h: int, w: int) -> tuple[int, int]:
        """Patch grid for an input of h x w pixels (must be multiples of the patch size)."""
        p = self.patch_size
        if h % p or w % p:
            raise ConfigError(
                f"Input size {h}x{w} is not a multiple of the patch size {p}; resize or crop it."
            )
        return h // p, w // p

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding for a patch grid, bicubic-interpolated from the native grid."""
        if tuple(grid) == self.pos_grid:
            return self.pos_embed
        return resample_abs_pos_embed(
            self.pos_embed, new_size=list(grid), old_size=list(self.pos_grid), num_prefix_tokens=0
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> model input; a gray image feeds every channel of an RGB model."""
        if x.ndim != 4:
            raise ConfigError(f"Encoder input must be [B, C, H, W]; got shape {tuple(x.shape)}.")
        if x.shape[1] != self.in_chans:
            if x.shape[1] == 1:
                x = x.expand(-1, self.in_chans, -1, -1)
            else:
                raise ConfigError(
                    f"Encoder expects {self.in_chans} channel(s) (or 1 gray channel); got "
                    f"{x.shape[1]}."
                )
        return (x - self.in_mean) / self.in_std

    def embed(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens + position, optionally gathered to ``masks`` [B, K], prefix prepended."""
        grid = self.grid_size(x.shape[-2], x.shape[-1])
        x = self.patch_embed(self.normalize(x))
        x = x + self.pos_embed_for(grid).to(x.dtype)
        if masks is not None:
            x = apply_masks(x, masks)
        prefix = [t for t in (self.cls_token, self.reg_token) if t is not None]
        if prefix:
            x = torch.cat([t.expand(x.shape[0], -1, -1).to(x.dtype) for t in prefix] + [x], dim=1)
        return x

    # -- forwards --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """[B,C,H,W] in [0,1] -> normed patch tokens [B, N or K, D] (prefix removed)."""
        x = self.embed(x, masks)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, self.num_prefix_tokens :]

    def forward_with_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prefix tokens [B,P,D], patch tokens [B,N,D]) after the final norm (CLS for DINOv2)."""
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]

    def forward_layers(
        self, x: torch.Tensor, layers: Sequence[int], norm: bool = True
    ) -> list[torch.Tensor]:
        """Patch tokens [B, N, D] after each block in ``layers`` (negative indices allowed)."""
        n = len(self.blocks)
        want = []
        for i in layers:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ConfigError(f"layer index {i} is out of range for a {n}-block encoder.")
            want.append(j)
        x = self.embed(x)
        found: dict[int, torch.Tensor] = {}
        for j, blk in enumerate(self.blocks[: max(want) + 1]):
            x = blk(x)
            if j in want:
                found[j] = self.norm(x) if norm else x
        return [found[j][:, self.num_prefix_tokens :] for j in want]


class Predictor(nn.Module):
    """Narrow ViT that predicts target-token features from context tokens.

    All M target blocks run in ONE batched call: the context is repeated M times along
    the batch (as in I-JEPA), mask tokens carry the target positions, and only the
    target tokens are projected back to encoder width.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        embed_dim: int = 192,
        pred_embed_dim: int = 96,
        depth: int = 3,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.embed_dim = embed_dim
        self.predictor_embed = nn.Linear(embed_dim, pred_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed(pred_embed_dim, self.grid))
        dpr = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                dim=pred_embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                drop_path=dpr[i], norm_layer=_norm_layer(norm_eps),
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(pred_embed_dim, eps=norm_eps)
        self.proj = nn.Linear(pred_embed_dim, embed_dim)

    def forward(
        self, ctx_tokens: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor
    ) -> torch.Tensor:
        """ctx_tokens [B,Nc,D], ctx_idx [B,Nc], tgt_idx [M,B,K] -> predictions [M,B,K,D]."""
        m, b, k = tgt_idx.shape
        x = self.predictor_embed(ctx_tokens)
        pos = self.pos_embed[0].to(x.dtype)  # [N, P]: index it directly, no batch copies
        x = x + pos[ctx_idx]
        nc = x.shape[1]
        tgt = self.mask_token.to(x.dtype) + pos[tgt_idx]  # [M,B,K,P]
        x = torch.cat([x.unsqueeze(0).expand(m, -1, -1, -1), tgt], dim=2)
        x = x.reshape(m * b, nc + k, -1)
        for blk in self.blocks:
            x = blk(x)
        x = self.proj(self.norm(x[:, nc:]))
        return x.view(m, b, k, -1)


# ----------------------------------------------------------------------------- init & builders


def _init_kit(module: nn.Module, blocks: Sequence[nn.Module], std: float) -> None:
    """I-JEPA init: trunc-normal(std) linears, zero biases, depth-rescaled residual outputs."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for i, blk in enumerate(blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * i))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * i))


def _init_patch_embed(proj: nn.Conv2d, how: str, std: float) -> None:
    if how == "xavier":  # as MAE: treat the conv as a linear map of the flattened patch
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    elif how == "trunc_normal":
        nn.init.trunc_normal_(proj.weight, std=std)
    else:  # torch_default: keep Conv2d's own (kaiming-uniform) init
        return
    if proj.bias is not None:
        nn.init.zeros_(proj.bias)


def build_encoder(cfg: ModelConfig, init: str = "kit", seed: int = 0) -> VisionTransformer:
    """Kit encoder. ``init="kit"``: I-JEPA init with ``cfg.patch_init`` for the patch embed;
    ``"torch_default"``: PyTorch's default init everywhere (the strongest random baseline)."""
    if init not in ENCODER_INITS:
        raise ConfigError(f"build_encoder(init={init!r}): use one of {ENCODER_INITS}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = VisionTransformer(
            img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
            embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, drop_path=cfg.drop_path,
            norm_eps=cfg.norm_eps, in_mean=(cfg.in_mean,), in_std=(cfg.in_std,),
        )
        if init == "kit":
            _init_kit(enc, enc.blocks, cfg.init_std)
            _init_patch_embed(enc.patch_embed.proj, cfg.patch_init, cfg.init_std)
    return enc


def build_predictor(cfg: ModelConfig, seed: int = 0) -> Predictor:
    """Kit predictor (I-JEPA init: trunc-normal linears and mask token)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        pred = Predictor(
            grid=cfg.grid, embed_dim=cfg.embed_dim, pred_embed_dim=cfg.pred_embed_dim,
            depth=cfg.pred_depth, num_heads=cfg.pred_num_heads, mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias, drop_path=cfg.drop_path, norm_eps=cfg.norm_eps,
        )
        _init_kit(pred, pred.blocks, cfg.init_std)
        nn.init.trunc_normal_(pred.mask_token, std=cfg.init_std)
    return pred


def pooled_embedding(encoder: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Image embedding [B, D]: average of the patch tokens (I-JEPA's convention).

    No ``no_grad`` here, so attribution methods can differentiate through it.
    """
    return encoder(x).mean(dim=1)


def predict_targets(encoder: VisionTransformer, predictor: Predictor, imgs: torch.Tensor,
                    ctx_idx: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
    """The I-JEPA prediction: encode only the context tokens, then predict every target block.

    imgs [B,C,H,W], ctx_idx [B,Nc], tgt_idx [M,B,K] -> predictions [M,B,K,D]. The trainer and
    the latent analyses both call this, so what a notebook shows is what training optimises.
    """
    return predictor(encoder(imgs, ctx_idx), ctx_idx, tgt_idx)


def normalize_targets(tokens: torch.Tensor) -> torch.Tensor:
    """I-JEPA's regression target: each token layer-normed WITHOUT affine parameters (in
    float32), so the target's scale cannot shrink to make the loss trivially small."""
    return F.layer_norm(tokens.float(), (tokens.shape[-1],))


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode for a block and restore each one's own mode afterwards,
    so an analysis call never leaves a caller's network switched to eval (or train)."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
