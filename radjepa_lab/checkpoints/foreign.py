"""Foreign checkpoints: encoders of the official I-JEPA code, RadJEPA releases, Rad-DINO /
DINOv2 (original or Hugging Face key names) and Hugging Face ``IJepaModel`` files, imported into
the kit's encoder.

:func:`load_encoder` is the one entry point (it also reads the kit's own files). Every file is
read with ``torch.load(weights_only=True)`` or safetensors: loading never runs pickled code,
and no network is built from a file's sizes before its tensors are checked.

An imported encoder behaves like the code that trained it: it resamples its position
embeddings to other grids with that code's interpolation (``encoder.pos_interp``), and a
Hugging Face model folder's ``config.json`` (heads, LayerNorm eps) and
``preprocessor_config.json`` (``image_mean`` / ``image_std``, e.g. Rad-DINO's) are read when
they sit beside the weights. ``encoder.import_info`` says where each setting came from.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from radjepa_lab.checkpoints.kit import (
    EVALUATED,
    _block_count,
    _check_kit,
    _kit_networks,
    _objective,
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
    "hf_side_files",
    "load_encoder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FORMATS = ("auto", "kit", "ijepa", "radjepa", "dinov2", "ijepa_hf")
_KNOWN_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
_STRIP_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.", "dinov2.")
# How each format's own code resamples position embeddings (models.POS_INTERPOLATIONS). The
# I-JEPA reference (and RadJEPA, built on it) resizes bicubic without antialiasing; its
# interpolate_pos_encoding also drops a row it takes for a CLS token the encoder does not
# have, which the kit does not copy. Hugging Face's Dinov2Model and IJepaModel resize bicubic
# without antialiasing to the new size; the DINOv2 repository adds 0.1 to the scale factor.
_POS_INTERP = {"kit": "timm", "ijepa": "bicubic", "radjepa": "bicubic", "dinov2": "dinov2",
               "dinov2_hf": "bicubic", "ijepa_hf": "bicubic"}
# Hugging Face's default LayerNorm eps per architecture, when no config.json says otherwise
_HF_EPS = {"dinov2_hf": 1e-6, "ijepa_hf": 1e-12}


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


def _hf_layout(keys: Sequence[str]) -> str | None:
    """``dinov2`` or ``ijepa_hf`` for Hugging Face key names, None for others; a Hugging Face
    ViT-style layout with a CLS token (ViTModel, DeiT ...) is refused by name."""
    if not any("embeddings.patch_embeddings" in k for k in keys):
        return None
    if not any("layernorm_before" in k or "intermediate.dense" in k for k in keys):
        return "dinov2"  # Dinov2Model: norm1/norm2, mlp.fc1/fc2, layer_scale
    if any(k.endswith("cls_token") for k in keys):
        raise CheckpointError(
            "Hugging Face ViT-style layout with a CLS token (layernorm_before, "
            "intermediate.dense, embeddings.cls_token: ViTModel and relatives) is not a format "
            f"the kit imports; it reads {FORMATS[1:]}. Export the encoder as a timm state dict.")
    return "ijepa_hf"  # IJepaModel: ViT-style blocks, no CLS token


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
        hf = _hf_layout(keys)
        if hf is not None:
            return hf
        if any(k.endswith("cls_token") for k in keys):
            return "dinov2"
        if any(k.endswith("patch_embed.proj.weight") for k in keys):
            return "radjepa"
    raise CheckpointError(
        f"Unrecognised checkpoint layout; pass fmt= one of {FORMATS[1:]}."
    )


def _hf_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``Dinov2Model`` (Rad-DINO's release) and ``IJepaModel`` keys -> timm names.

    Both the key names that ``save_pretrained`` writes (``encoder.layer.N.attention.attention.
    query`` ...) and the module names of transformers >= 5 (``layers.N.attention.q_proj`` ...)
    are read.
    """
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
    layer_map = {  # Dinov2Model | IJepaModel (ViT-style) -> timm Block
        "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
        "layernorm_before": "norm1", "layernorm_after": "norm2",
        "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
        "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    }
    part = {"query": "q", "key": "k", "value": "v", "q_proj": "q", "k_proj": "k", "v_proj": "v"}
    for k, v in sd.items():
        if k in simple:
            out[simple[k]] = v
            continue
        m = re.match(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias|lambda1)$", k)
        if not m:
            continue
        i, name, kind = int(m.group(1)), m.group(2), m.group(3)
        last = name.rsplit(".", 1)[-1]
        if name in ("layer_scale1", "layer_scale2"):
            out[f"blocks.{i}.ls{name[-1]}.gamma"] = v
        elif name.startswith("attention.") and last in part and name != "attention.output.dense":
            qkv.setdefault((i, kind), {})[part[last]] = v
        elif name in layer_map:
            out[f"blocks.{i}.{layer_map[name]}.{kind}"] = v
    for (i, kind), parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({e}); fix or remove it.") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}.")
    return data


def _numbers(value: Any, where: Path, name: str, positive: bool) -> tuple[float, ...]:
    vals = value if isinstance(value, list | tuple) else [value]
    ok = (len(vals) in (1, 3) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                      and math.isfinite(v) and (v > 0 or not positive)
                                      for v in vals))
    if not ok:
        raise CheckpointError(f"{where}: {name}={value!r} must be 1 or 3 finite numbers"
                              f"{' > 0' if positive else ''}.")
    return tuple(float(v) for v in vals)


def hf_side_files(weights: str | Path) -> dict[str, Any]:
    """What a Hugging Face model folder says beside its weights: ``num_heads`` and ``norm_eps``
    from ``config.json``, ``in_mean`` / ``in_std`` from ``preprocessor_config.json`` (HF's image
    processor file: ``image_mean`` / ``image_std``). Only the keys found are returned."""
    folder = Path(weights).parent
    out: dict[str, Any] = {}
    cfg = _read_json(folder / "config.json")
    if cfg is not None:
        where = folder / "config.json"
        if cfg.get("use_swiglu_ffn"):
            raise CheckpointError(f"{where}: use_swiglu_ffn=true (DINOv2 ViT-g); the kit's "
                                  "encoder has a GELU MLP and cannot import SwiGLU blocks.")
        heads = cfg.get("num_attention_heads")
        if heads is not None:
            if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
                raise CheckpointError(f"{where}: num_attention_heads={heads!r} must be >= 1.")
            out["num_heads"] = heads
        if cfg.get("layer_norm_eps") is not None:
            out["norm_eps"] = _numbers(cfg["layer_norm_eps"], where, "layer_norm_eps", True)[0]
    pre = _read_json(folder / "preprocessor_config.json")
    if pre is not None and ("image_mean" in pre or "image_std" in pre):
        where = folder / "preprocessor_config.json"
        if "image_mean" not in pre or "image_std" not in pre:
            raise CheckpointError(f"{where}: has only one of image_mean / image_std.")
        out["in_mean"] = _numbers(pre["image_mean"], where, "image_mean", False)
        out["in_std"] = _numbers(pre["image_std"], where, "image_std", True)
    return out


def _timm_like_encoder(
    sd: dict[str, torch.Tensor],
    where: str,
    num_heads: int | None,
    in_mean: Sequence[float],
    in_std: Sequence[float],
    norm_eps: float = 1e-6,
) -> VisionTransformer:
    """Build and load a VisionTransformer from timm/I-JEPA/DINOv2 style key names."""
    try:
        w = sd["patch_embed.proj.weight"]
        pos = sd["pos_embed"]
        fc1 = sd["blocks.0.mlp.fc1.weight"]
    except KeyError as e:
        raise CheckpointError(f"{where}: missing key {e}; is this a ViT state dict?") from None
    dim, chans, p = w.shape[0], w.shape[1], w.shape[-1]
    depth = _block_count(sd, "encoder", where)
    if depth == 0:
        raise CheckpointError(f"{where}: no transformer blocks; is this a ViT state dict?")
    _state_dict({"weights": sd}, "weights", where)  # finite tensors only
    heads = num_heads or _KNOWN_HEADS.get(dim, max(1, dim // 64))
    if dim % heads:
        raise CheckpointError(f"{where}: width {dim} is not divisible by num_heads={heads}.")
    mlp_ratio = fc1.shape[0] / dim
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
        depth=depth, num_heads=heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps,
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

    Formats: ``kit`` (our checkpoints, any objective), ``ijepa`` (official: encoder/predictor/
    target_encoder with ``module.`` prefixes), ``radjepa`` (``{"encoder": timm ViT}``,
    e.g. jepa_encoder.pth.tar), ``dinov2`` (Rad-DINO/DINOv2 state dict, original or
    Hugging Face key names, ``.safetensors`` or torch), ``ijepa_hf`` (Hugging Face
    ``IJepaModel``: ViT-style blocks, no CLS token). ``which`` picks ``target`` (the evaluated
    encoder: the EMA target of I-JEPA, the teacher of DINO, MAE's only encoder) or ``context``
    (the online encoder) for kit/ijepa files. 3-channel imports keep their RGB patch
    embedding and receive the gray channel repeated, normalised with ``in_mean``/``in_std``:
    given here, else a Hugging Face ``preprocessor_config.json`` beside the weights (Rad-DINO's
    own statistics), else ImageNet's. Heads cannot be read from shapes: ``num_heads``, else a
    ``config.json`` beside Hugging Face weights, else the standard ViT table (head width 64, 16
    heads for ViT-L/H). The encoder resamples position embeddings like its source code
    (``pos_interp``); ``import_info`` records format, interpolation and where the statistics
    and heads came from.
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
        if in_mean is not None or in_std is not None:
            raise CheckpointError(f"{where}: a kit checkpoint carries its own input statistics "
                                  "(its config's in_mean / in_std); in_mean / in_std are for "
                                  "imported encoders only.")
        state = _check_kit(obj, path)
        objective = _objective(state, where)
        key = EVALUATED[objective] if which == "target" else "encoder"
        if key not in obj and "exported" in obj:
            raise CheckpointError(
                f"{where}: this exported checkpoint keeps only the evaluated encoder "
                f"({EVALUATED[objective]}); load it with which='target'."
            )
        enc = _kit_networks(state, (key,), where)[key]
        enc.import_info = {"format": "kit", "objective": objective, "network": key}
        return enc
    source = kind
    if kind == "ijepa":
        key = "target_encoder" if which == "target" else "encoder"
        if key not in obj:
            raise CheckpointError(f"{where}: no {key!r} entry (keys: {sorted(obj)[:8]}).")
        sd = _strip(obj[key])
    elif kind == "radjepa":
        sd = _strip(obj["encoder"] if "encoder" in obj else obj)
    elif kind in ("dinov2", "ijepa_hf"):
        raw = obj
        for k in ("teacher", "state_dict", "model"):
            if isinstance(raw, Mapping) and k in raw and isinstance(raw[k], Mapping):
                raw = raw[k]
        sd = _strip(raw)
        hf = _hf_layout(list(sd))
        if hf is not None:
            if hf != kind:
                raise CheckpointError(f"{where}: the keys are Hugging Face's {hf} layout, not "
                                      f"{kind}; pass fmt={hf!r} or fmt='auto'.")
            source = "dinov2_hf" if hf == "dinov2" else hf
            sd = _hf_to_timm(sd)
    else:  # pragma: no cover - guarded above
        raise CheckpointError(where)
    side = hf_side_files(path) if source in _HF_EPS else {}
    w = sd.get("patch_embed.proj.weight")
    rgb = w is None or w.shape[1] == 3
    given = in_mean is not None or in_std is not None
    if given:
        stats = "given"
    elif "in_mean" in side:
        stats, in_mean, in_std = "preprocessor_config.json", side["in_mean"], side["in_std"]
    else:
        stats = "ImageNet" if rgb else "kit default"
    mean = tuple(in_mean) if in_mean is not None else (IMAGENET_MEAN if rgb else (0.5,))
    std = tuple(in_std) if in_std is not None else (IMAGENET_STD if rgb else (0.25,))
    heads = num_heads or side.get("num_heads")
    enc = _timm_like_encoder(sd, where, heads, mean, std,
                             side.get("norm_eps", _HF_EPS.get(source, 1e-6))).eval()
    enc.pos_interp = _POS_INTERP[source]
    enc.import_info = {
        "format": source, "pos_interp": enc.pos_interp, "input_stats": stats,
        "in_mean": list(mean), "in_std": list(std),
        "heads": "given" if num_heads else "config.json" if "num_heads" in side else "ViT table",
    }
    return enc
