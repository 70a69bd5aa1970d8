"""Every network the kit trains, on timm building blocks: the masked ViT encoder, the I-JEPA
predictor, DINO's projection head and MAE's pixel decoder; their builders and pooling.

The encoder owns input normalisation (buffers ``in_mean``/``in_std``): callers always
pass images in [0, 1]. Position embeddings are a fixed 2-D sin-cos buffer laid out as
in I-JEPA, kept for the patch grid only; prefix tokens (CLS/registers of imported
DINOv2 models) carry their position inside the token itself, so interpolating to a new
grid never has to guess whether a CLS row exists (the reference's
``interpolate_pos_encoding`` assumed one). How the grid is resampled is the encoder's
``pos_interp`` (:data:`POS_INTERPOLATIONS`): timm's antialiased bicubic for kit models, and
for an imported model the interpolation of the code it was trained with.
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
    "POS_INTERPOLATIONS",
    "DINOHead",
    "MAEDecoder",
    "Predictor",
    "VisionTransformer",
    "apply_masks",
    "build_dino_head",
    "build_encoder",
    "build_mae_decoder",
    "build_predictor",
    "patchify",
    "evaluating",
    "normalize_targets",
    "pooled_embedding",
    "predict_targets",
    "resample_pos_embed",
    "sincos_pos_embed",
]

# How an encoder resamples its position embedding to another patch grid (``pos_interp``):
# "timm"    bicubic with antialiasing, at the new size (timm's resample_abs_pos_embed; the kit's
#           own models);
# "bicubic" bicubic without antialiasing, at the new size (Hugging Face Dinov2Model and
#           IJepaModel; the I-JEPA / RadJEPA code);
# "dinov2"  bicubic without antialiasing, at a scale factor of (new + 0.1) / old (the DINOv2
#           repository's interpolate_offset=0.1; its hub models and original-key checkpoints).
POS_INTERPOLATIONS = ("timm", "bicubic", "dinov2")

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


def resample_pos_embed(pe: torch.Tensor, old: tuple[int, int], new: tuple[int, int],
                       how: str = "timm") -> torch.Tensor:
    """Position embedding ``[1, old_h*old_w, D]`` resampled to the grid ``new`` (see
    :data:`POS_INTERPOLATIONS`); in float32, returned in ``pe``'s dtype."""
    if how not in POS_INTERPOLATIONS:
        raise ConfigError(f"pos_interp={how!r}: use one of {POS_INTERPOLATIONS}.")
    if how != "dinov2":
        return resample_abs_pos_embed(pe, new_size=list(new), old_size=list(old),
                                      num_prefix_tokens=0, antialias=how == "timm")
    d = pe.shape[-1]
    grid = pe.float().reshape(1, old[0], old[1], d).permute(0, 3, 1, 2)
    scale = ((new[0] + 0.1) / old[0], (new[1] + 0.1) / old[1])
    out = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    return out.permute(0, 2, 3, 1).reshape(1, -1, d).to(pe.dtype)


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
        self.pos_interp = "timm"  # how pos_embed_for resamples (POS_INTERPOLATIONS)
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
        """Position embedding for a patch grid, resampled from the native grid the way
        ``self.pos_interp`` says (bicubic in every case; antialiased for kit models)."""
        if tuple(grid) == self.pos_grid:
            return self.pos_embed
        return resample_pos_embed(self.pos_embed, self.pos_grid, tuple(grid), self.pos_interp)

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


class DINOHead(nn.Module):
    """DINO's projection head, on the mean of the patch tokens (the kit's encoders have no CLS).

    As DINO's ``DINOHead`` (facebookresearch/dino, Apache-2.0; lightly's
    ``DINOProjectionHead`` is the same): a 3-layer MLP with GELU to a ``bottleneck_dim`` code,
    L2-normalised, then a prototype layer without bias whose rows have norm 1. DINO writes that
    layer as ``weight_norm`` with the norm frozen at 1 (``norm_last_layer=True``); dividing
    each prototype by its norm in ``forward`` is the same map, spelled out. Logits are cosine
    similarities to ``out_dim`` prototypes, in [-1, 1] before the temperatures.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 out_dim: int = 1024) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image embeddings [B, D] -> prototype logits [B, out_dim]."""
        code = F.normalize(self.mlp(x), dim=-1)
        return F.linear(code, F.normalize(self.prototypes, dim=-1).to(code.dtype))


def patchify(imgs: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, patch * patch * C]: each patch's pixels, row-major like the tokens."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MAEDecoder(nn.Module):
    """MAE's light pixel decoder (He et al. 2022; timm blocks), with the predictor's shape.

    The visible tokens are projected to the decoder width, every hidden patch gets the one
    learned mask token, all of them get the decoder's own fixed 2-D sin-cos positions, and a
    few transformer blocks and a linear layer return each patch's pixels. Like the I-JEPA
    predictor it is narrow and discarded after pretraining, so MAE gets exactly the predictor's
    extra capacity: the two objectives differ in their target, not in their budget.
    """

    def __init__(self, grid: tuple[int, int], embed_dim: int, patch_size: int, in_chans: int,
                 dec_dim: int = 96, depth: int = 3, num_heads: int = 3, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.embed = nn.Linear(embed_dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.register_buffer("pos_embed", sincos_pos_embed(dec_dim, self.grid))
        self.blocks = nn.ModuleList(
            Block(dim=dec_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                  norm_layer=_norm_layer(norm_eps))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dec_dim, eps=norm_eps)
        self.pred = nn.Linear(dec_dim, patch_size * patch_size * in_chans)

    def forward(self, visible: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """visible tokens [B, K, D] at patch indices ``keep`` [B, K] -> pixels [B, N, p*p*C]."""
        x = self.embed(visible)
        b, n = x.shape[0], self.pos_embed.shape[1]
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()
        full[torch.arange(b, device=x.device).view(-1, 1), keep] = x
        x = full + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))


# ----------------------------------------------------------------------------- init & builders


def _init_kit(module: nn.Module, blocks: Sequence[nn.Module], std: float) -> None:
    """The kit's init: trunc-normal(std) linears, zero biases, unit LayerNorms, and then the
    residual output of block ``i`` (``attn.proj``, ``mlp.fc2``) divided by sqrt(2 i).

    This is the reference I-JEPA *constructor*: ``VisionTransformer.__init__`` in
    facebookresearch/ijepa (src/models/vision_transformer.py) runs ``self.apply(_init_weights)``
    and then ``fix_init_weight()``, the depth rescaling (as BEiT does). The reference *training*
    code does not keep it: ``src/helper.py:init_model`` builds the networks and then
    re-initialises every Linear (trunc-normal 0.02, zero bias) and LayerNorm once more, which
    overwrites the rescaled weights, so the released I-JEPA models started without the depth
    rescaling (their patch-embedding conv and the predictor's mask token keep the constructor's
    trunc-normal). The kit keeps the rescaling on purpose: it damps the residual stream of deep
    stacks at init (the GPT-2 / BEiT argument), every preset was tuned and every shipped result
    measured with it, and changing it would change them all. The patch embedding is set apart
    by ``ModelConfig.patch_init`` (xavier by default, see ``_init_patch_embed``).
    """
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
    """Kit encoder. ``init="kit"``: the reference I-JEPA constructor's init, depth rescaling
    included (:func:`_init_kit` says where the reference training code differs), with
    ``cfg.patch_init`` for the patch embed;
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
    """Kit predictor (the kit's init, :func:`_init_kit`, and a trunc-normal mask token)."""
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


def build_dino_head(cfg: ModelConfig, dino: Any, seed: int = 0) -> DINOHead:
    """DINO's projection head for an encoder of ``cfg`` with the sizes of ``dino``
    (:class:`~radjepa_lab.config.DinoConfig`); DINO's init (trunc-normal 0.02, zero biases)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        head = DINOHead(cfg.embed_dim, dino.hidden_dim, dino.bottleneck_dim, dino.out_dim)
        for m in head.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=cfg.init_std)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(head.prototypes, std=cfg.init_std)
    return head


def build_mae_decoder(cfg: ModelConfig, seed: int = 0) -> MAEDecoder:
    """MAE's decoder with the predictor's width, depth and heads (``cfg.pred_*``), initialised
    like the predictor (the kit's init, trunc-normal mask token)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        dec = MAEDecoder(cfg.grid, cfg.embed_dim, cfg.patch_size, cfg.in_chans,
                         cfg.pred_embed_dim, cfg.pred_depth, cfg.pred_num_heads, cfg.mlp_ratio,
                         cfg.qkv_bias, cfg.norm_eps)
        _init_kit(dec, dec.blocks, cfg.init_std)
        nn.init.trunc_normal_(dec.mask_token, std=cfg.init_std)
    return dec


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
