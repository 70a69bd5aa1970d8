"""Foreign checkpoints: encoders of the official I-JEPA code, RadJEPA releases and Rad-DINO /
DINOv2 (original or Hugging Face key names), imported into the kit's encoder.

:func:`load_encoder` is the one entry point (it also reads the kit's own files). Every file is
read with ``torch.load(weights_only=True)`` or safetensors: loading never runs pickled code,
and no network is built from a file's sizes before its tensors are checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from radjepa_lab.checkpoints.kit import (
    _block_count,
    _check_kit,
    _kit_networks,
    _state_dict,
    _torch_load,
)
from radjepa_lab.errors import CheckpointError
from radjepa_lab.models import VisionTransformer

__all__ = [
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "detect_format",
    "load_encoder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FORMATS = ("auto", "kit", "ijepa", "radjepa", "dinov2")
_KNOWN_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
_STRIP_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.", "dinov2.")


def _load_file(path: Path) -> Any:
    """A foreign file's content: safetensors or a plain torch state dict."""
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
    return _torch_load(path)


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
    depth = _block_count(sd, "encoder", where)
    if depth == 0:
        raise CheckpointError(f"{where}: no transformer blocks; is this a ViT state dict?")
    _state_dict({"weights": sd}, "weights", where)  # finite tensors only
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
        key = "target_encoder" if which == "target" else "encoder"
        if key not in obj and "exported" in obj:
            raise CheckpointError(
                f"{where}: this exported checkpoint keeps only the EMA target encoder; "
                "load it with which='target'."
            )
        return _kit_networks(_check_kit(obj, path), (key,), where)[key]
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
