"""Masked ViT encoder, I-JEPA predictor and checkpoint import, on timm building blocks.

The encoder owns input normalisation (buffers ``in_mean``/``in_std``): callers always
pass images in [0, 1]. Position embeddings are a fixed 2-D sin-cos buffer laid out as
in I-JEPA, kept for the patch grid only; prefix tokens (CLS/registers of imported
DINOv2 models) carry their position inside the token itself, so interpolating to a new
grid never has to guess whether a CLS row exists (the reference's
``interpolate_pos_encoding`` assumed one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block

from radjepa_lab.config import ENCODER_INITS, ModelConfig
from radjepa_lab.errors import CheckpointError, ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Predictor",
    "VisionTransformer",
    "apply_masks",
    "build_encoder",
    "build_predictor",
    "detect_format",
    "load_encoder",
    "pooled_embedding",
    "sincos_pos_embed",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


# ----------------------------------------------------------------------------- checkpoint import

FORMATS = ("auto", "kit", "ijepa", "radjepa", "dinov2")
_KNOWN_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
_STRIP_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.", "dinov2.")


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; check the path.")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - safetensors is a kit dependency
            raise CheckpointError(
                f"{path}: reading .safetensors needs the 'safetensors' package (pip install "
                "safetensors)."
            ) from e
        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}).") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: could not be loaded with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{e}). The kit only loads plain tensors/dicts; re-save the weights as a state dict."
        ) from e


def _strip(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    changed = True
    while changed:
        changed = False
        for p in _STRIP_PREFIXES:
            if out and all(k.startswith(p) for k in out):
                out = {k[len(p) :]: v for k, v in out.items()}
                changed = True
    if any(re.match(r"^blocks\.\d+\.\d+\.", k) for k in out):
        # DINOv2 FSDP block chunks: blocks.<chunk>.<i>.* -> blocks.<i>.*
        out = {re.sub(r"^blocks\.\d+\.(\d+\.)", r"blocks.\1", k): v for k, v in out.items()}
    return out


def detect_format(obj: Any) -> str:
    """Guess the checkpoint format of a loaded object (see :data:`FORMATS`)."""
    if isinstance(obj, Mapping):
        if obj.get("format") == "radjepa_lab":
            return "kit"
        if "target_encoder" in obj and "encoder" in obj:
            return "ijepa"
        if "encoder" in obj and isinstance(obj["encoder"], Mapping):
            return "radjepa"
        for key in ("state_dict", "model", "teacher"):
            if key in obj and isinstance(obj[key], Mapping):
                return detect_format(obj[key]) if key != "teacher" else "dinov2"
        keys = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
        if any("embeddings.patch_embeddings" in k for k in keys):
            return "dinov2"
        if any(k.endswith("cls_token") for k in keys):
            return "dinov2"
        if any(k.endswith("patch_embed.proj.weight") for k in keys):
            return "radjepa"
    raise CheckpointError(
        "Unrecognised checkpoint layout; pass fmt= one of 'kit', 'ijepa', 'radjepa', 'dinov2'."
    )


def _hf_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HuggingFace ``Dinov2Model`` keys (Rad-DINO's release) -> timm/DINOv2 key names."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    layer_map = {
        "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
        "attention.output.dense": "attn.proj",
    }
    for k, v in sd.items():
        if k in simple:
            out[simple[k]] = v
            continue
        m = re.match(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$", k)
        if not m:
            continue
        i, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if name in ("layer_scale1", "layer_scale2"):
            out[f"blocks.{i}.ls{name[-1]}.gamma"] = v
        elif name.startswith("attention.attention."):
            qkv.setdefault((i, kind), {})[name.rsplit(".", 1)[1]] = v
        elif name in layer_map:
            out[f"blocks.{i}.{layer_map[name]}.{kind}"] = v
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out


def _timm_like_encoder(
    sd: dict[str, torch.Tensor],
    where: str,
    num_heads: int | None,
    in_mean: Sequence[float],
    in_std: Sequence[float],
) -> VisionTransformer:
    """Build and load a VisionTransformer from timm/I-JEPA/DINOv2 style key names."""
    try:
        w = sd["patch_embed.proj.weight"]
        pos = sd["pos_embed"]
    except KeyError as e:
        raise CheckpointError(f"{where}: missing key {e}; is this a ViT state dict?") from None
    dim, chans, p = w.shape[0], w.shape[1], w.shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k)))
    heads = num_heads or _KNOWN_HEADS.get(dim, max(1, dim // 64))
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / dim
    has_cls = "cls_token" in sd
    reg = sd.get("register_tokens", sd.get("reg_token"))
    n_reg = 0 if reg is None else reg.shape[1]
    ls = "blocks.0.ls1.gamma" in sd
    n_pos = pos.shape[1]
    # Stored grids are square; extra rows are position embeddings of prefix tokens.
    for n_extra in (0, 1, 1 + n_reg):
        g = math.isqrt(n_pos - n_extra)
        if g * g == n_pos - n_extra and (n_extra == 0 or has_cls):
            img_grid = (g, g)
            break
    else:
        raise CheckpointError(f"{where}: cannot infer the patch grid from pos_embed {pos.shape}.")
    enc = VisionTransformer(
        img_size=(img_grid[0] * p, img_grid[1] * p), patch_size=p, in_chans=chans, embed_dim=dim,
        depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, init_values=1.0 if ls else None,
        class_token=has_cls, num_register_tokens=n_reg, in_mean=in_mean, in_std=in_std,
    )
    new: dict[str, torch.Tensor] = {}
    pos = pos.float()
    new["pos_embed"] = pos[:, n_extra:]
    prefix_pos = pos[:, :n_extra]
    if has_cls:
        cls = sd["cls_token"].float()
        new["cls_token"] = cls + (prefix_pos[:, :1] if n_extra >= 1 else 0)
    if n_reg:
        r = reg.float()
        new["reg_token"] = r + (prefix_pos[:, 1 : 1 + n_reg] if n_extra > 1 else 0)
    target = enc.state_dict()
    for k in target:
        if k in new or k in ("in_mean", "in_std"):
            continue
        if k not in sd:
            raise CheckpointError(f"{where}: missing key {k!r} for a {depth}-block ViT.")
        new[k] = sd[k]
    new["in_mean"], new["in_std"] = enc.in_mean, enc.in_std
    try:
        enc.load_state_dict(new, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit the inferred ViT ({e}).") from e
    return enc


def load_encoder(
    path: str | Path,
    fmt: str = "auto",
    which: str = "target",
    *,
    num_heads: int | None = None,
    in_mean: Sequence[float] | None = None,
    in_std: Sequence[float] | None = None,
) -> VisionTransformer:
    """Load an encoder from a local file, never downloading and never unpickling code.

    Formats: ``kit`` (our checkpoints), ``ijepa`` (official: encoder/predictor/
    target_encoder with ``module.`` prefixes), ``radjepa`` (``{"encoder": timm ViT}``,
    e.g. jepa_encoder.pth.tar), ``dinov2`` (Rad-DINO/DINOv2 state dict, original or
    HuggingFace key names, ``.safetensors`` or torch). ``which`` picks ``target`` (EMA,
    the I-JEPA evaluation convention) or ``context`` for kit/ijepa files. 3-channel
    imports keep their RGB patch embedding and receive the gray channel repeated,
    normalised with ``in_mean``/``in_std`` (default ImageNet; Rad-DINO's processor uses
    its own values, pass them here). Heads cannot be read from shapes; ``num_heads``
    defaults to the standard ViT table (head width 64, 16 heads for ViT-L/H).
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise CheckpointError(f"load_encoder(fmt={fmt!r}): use one of {FORMATS}.")
    if which not in ("target", "context", "encoder"):
        raise CheckpointError(f"load_encoder(which={which!r}): use 'target' or 'context'.")
    obj = _load_file(path)
    kind = detect_format(obj) if fmt == "auto" else fmt
    where = f"{path} ({kind} format)"
    if kind == "kit":
        from radjepa_lab.config import config_from_dict

        if "config" not in obj:
            raise CheckpointError(f"{where}: no 'config' entry; was it written by the kit?")
        cfg = config_from_dict(obj["config"])
        key = "target_encoder" if which == "target" else "encoder"
        if key not in obj and "exported" in obj:
            raise CheckpointError(
                f"{where}: this exported checkpoint keeps only the EMA target encoder; "
                "load it with which='target'."
            )
        enc = build_encoder(cfg.model)
        try:
            enc.load_state_dict(obj[key])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{where}: bad '{key}' weights ({e}).") from e
        return enc.eval()
    if kind == "ijepa":
        key = "target_encoder" if which == "target" else "encoder"
        if key not in obj:
            raise CheckpointError(f"{where}: no {key!r} entry (keys: {sorted(obj)[:8]}).")
        sd = _strip(obj[key])
    elif kind == "radjepa":
        sd = _strip(obj["encoder"] if "encoder" in obj else obj)
    elif kind == "dinov2":
        raw = obj
        for k in ("teacher", "state_dict", "model"):
            if isinstance(raw, Mapping) and k in raw and isinstance(raw[k], Mapping):
                raw = raw[k]
        sd = _strip(raw)
        if any(k.startswith("embeddings.") for k in sd):
            sd = _hf_to_timm(sd)
    else:  # pragma: no cover - guarded above
        raise CheckpointError(where)
    w = sd.get("patch_embed.proj.weight")
    rgb = w is None or w.shape[1] == 3
    mean = tuple(in_mean) if in_mean is not None else (IMAGENET_MEAN if rgb else (0.5,))
    std = tuple(in_std) if in_std is not None else (IMAGENET_STD if rgb else (0.25,))
    return _timm_like_encoder(sd, where, num_heads, mean, std).eval()
