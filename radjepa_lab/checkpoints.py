"""The kit's checkpoint format, and the one place that reads and writes weights.

* **Kit checkpoints** (``checkpoint.pt``): a plain dict with ``format="radjepa_lab"``, the
  run's config, the three networks, the optimiser, every RNG state and the data-stream
  position, so ``resume=True`` continues an interrupted run bit-exactly.
  :func:`save_checkpoint` writes atomically; :func:`load_checkpoint` is the only reader of the
  format; :func:`load_jepa` builds the networks; :func:`export_checkpoint` writes the small
  inference-only copy the kit ships.
* **Foreign checkpoints**: :func:`load_encoder` imports encoders of the official I-JEPA code,
  RadJEPA releases and Rad-DINO / DINOv2 (original or Hugging Face key names).

Every file is read with ``torch.load(weights_only=True)`` (or safetensors): loading never runs
pickled code.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radjepa_lab.atomic import atomic_write
from radjepa_lab.config import ModelConfig, TrainConfig, config_from_dict
from radjepa_lab.errors import CheckpointError, ConfigError
from radjepa_lab.models import Predictor, VisionTransformer, build_encoder, build_predictor

__all__ = [
    "CKPT_FORMAT",
    "CKPT_NAME",
    "CKPT_VERSION",
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REPO_ROOT",
    "SHIPPED_CHECKPOINT",
    "JEPAModels",
    "detect_format",
    "export_checkpoint",
    "load_checkpoint",
    "load_encoder",
    "load_jepa",
    "load_weights",
    "require_entries",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CKPT_NAME = "checkpoint.pt"
CKPT_FORMAT = "radjepa_lab"
CKPT_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CHECKPOINT = REPO_ROOT / "data" / "checkpoints" / "radjepa_lab_phantom.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- kit format


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (:func:`radjepa_lab.atomic.atomic_write`): a crash mid-write leaves the
    previous checkpoint intact. ``state`` must hold only plain containers, tensors and numbers
    so that ``weights_only`` loading accepts it.
    """
    return atomic_write(path, lambda f: torch.save(state, f), "the checkpoint")


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU: plain tensors and containers, never pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot be loaded with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{e}); it is corrupt or holds pickled objects. The kit only loads plain tensors and "
            "dicts; re-save the weights as a state dict."
        ) from e


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a kit checkpoint (the only reader of the format); CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; train first or fix the path.")
    return _check_kit(_torch_load(path), path)


def _check_kit(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != CKPT_FORMAT:
        raise CheckpointError(
            f"{path}: not a RadJEPA Lab checkpoint (no format={CKPT_FORMAT!r}); use "
            "radjepa_lab.checkpoints.load_encoder for I-JEPA/RadJEPA/DINOv2 files."
        )
    return obj


def checkpoint_config(state: Mapping[str, Any], where: Any = "checkpoint") -> TrainConfig:
    """The TrainConfig stored in a loaded kit checkpoint, checked like any other config."""
    if not isinstance(state.get("config"), Mapping):
        raise CheckpointError(f"{where}: no 'config' entry; was it written by the kit?")
    try:
        return config_from_dict(dict(state["config"]))
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{where}: its stored config is invalid ({e}). The file was edited or written by "
            "another tool; re-export it from the run that trained it."
        ) from e


def require_entries(state: Mapping[str, Any], keys: Sequence[str], where: Any,
                    why: str) -> None:
    """CheckpointError naming the entries ``why`` needs that ``state`` lacks."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{where}: missing {missing}, which {why} needs; an exported "
                              "(inference-only) checkpoint cannot do this, use the run's own "
                              "checkpoint.pt.")


def _state_dict(state: Mapping[str, Any], key: str, where: Any) -> dict[str, torch.Tensor]:
    """``state[key]`` as a state dict of finite tensors, or a CheckpointError naming the entry
    or the tensor at fault (a NaN weight would poison every result silently)."""
    sd = state.get(key)
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{where}: no {key!r} weights (entries: {sorted(state)[:10]}).")
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}: {key}.{name} is a {type(t).__name__}, not a tensor.")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"{where}: tensor {key}.{name} holds NaN/Inf values; the run diverged before "
                "it was saved or the file is corrupt. Use an earlier checkpoint or retrain.")
    return dict(sd)


def _block_count(sd: Mapping[str, Any], what: str, where: Any) -> int:
    """How many transformer blocks the weights hold (indices 0..n-1, none missing)."""
    idx = {int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))}
    if idx != set(range(len(idx))):
        gaps = sorted(set(range(max(idx, default=-1) + 1)) - idx)[:5]
        raise CheckpointError(f"{where}: {what} blocks {gaps} are missing; the file is incomplete.")
    return len(idx)


def _check_shapes(sd: Mapping[str, torch.Tensor], model: ModelConfig, key: str,
                  where: Any) -> None:
    """The config's sizes against the stored tensors, BEFORE any network is built: a config
    that asks for a network larger than its weights (a hostile or edited file) is refused
    without allocating it. ``load_state_dict`` checks every remaining tensor afterwards."""
    g = model.grid[0] * model.grid[1]
    if key == "predictor":
        d, depth = model.pred_embed_dim, model.pred_depth
        want = {"predictor_embed.weight": (d, model.embed_dim), "pos_embed": (1, g, d),
                "proj.weight": (model.embed_dim, d)}
    else:
        d, depth, p = model.embed_dim, model.depth, model.patch_size
        want = {"patch_embed.proj.weight": (d, model.in_chans, p, p), "pos_embed": (1, g, d)}
    want["blocks.0.mlp.fc1.weight"] = (int(d * model.mlp_ratio), d)
    for name, shape in want.items():
        got = sd.get(name)
        if got is None:
            raise CheckpointError(f"{where}: tensor {key}.{name} is missing; the file is "
                                  "incomplete or not a kit checkpoint.")
        if tuple(got.shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {key}.{name} has shape {tuple(got.shape)} but the stored "
                f"config asks for {shape}; config and weights disagree (the file was edited).")
    n = _block_count(sd, key, where)
    if n != depth:
        raise CheckpointError(f"{where}: {key} has {n} blocks but the stored config asks for "
                              f"{depth}; config and weights disagree (the file was edited).")


def _load(net: torch.nn.Module, sd: dict[str, torch.Tensor], key: str,
          where: Any) -> torch.nn.Module:
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:  # missing or unexpected keys, or a shape timm decides
        raise CheckpointError(f"{where}: bad {key!r} weights ({e}); re-run training.") from e
    return net


def _weights(state: Mapping[str, Any], key: str, model: ModelConfig,
             where: Any) -> dict[str, torch.Tensor]:
    sd = _state_dict(state, key, where)
    _check_shapes(sd, model, key, where)
    return sd


def load_weights(net: torch.nn.Module, state: Mapping[str, Any], key: str, model: ModelConfig,
                 where: Any) -> torch.nn.Module:
    """Load ``state[key]`` into ``net`` (built from ``model``): finite tensors, shapes checked
    against ``model``, every key present and none extra; CheckpointError otherwise."""
    return _load(net, _weights(state, key, model, where), key, where)


def _kit_networks(state: Mapping[str, Any], keys: Sequence[str],
                  where: Any) -> dict[str, torch.nn.Module]:
    """Build and load the networks stored under ``keys`` (encoders or the predictor); every
    one's weights are checked against the stored config before any network is built."""
    cfg = checkpoint_config(state, where)
    sds = {key: _weights(state, key, cfg.model, where) for key in dict.fromkeys(keys)}
    return {key: _load(build_predictor(cfg.model) if key == "predictor"
                       else build_encoder(cfg.model), sd, key, where).eval()
            for key, sd in sds.items()}


@dataclass
class JEPAModels:
    """The three I-JEPA networks of one checkpoint, on CPU in eval mode."""

    encoder: VisionTransformer  # context encoder (gets gradients during training)
    predictor: Predictor
    target_encoder: VisionTransformer  # EMA copy; the I-JEPA evaluation convention
    config: TrainConfig
    info: dict[str, Any] = field(default_factory=dict)


def load_jepa(path: str | Path | Any) -> JEPAModels:
    """Context encoder, predictor and EMA target encoder of a kit checkpoint.

    Exported checkpoints (:func:`export_checkpoint`, e.g. the shipped one) keep only the EMA
    target encoder; it then also serves as the context encoder (``info["context_from_target"]``).
    ``path`` may be anything with a ``.path`` (a notebook's checkpoint choice).
    """
    path = Path(getattr(path, "path", path))
    state = load_checkpoint(path)
    context_from_target = "encoder" not in state and "exported" in state
    nets = _kit_networks(state, ("target_encoder", "predictor") + (
        () if context_from_target else ("encoder",)), path)
    if context_from_target:
        nets["encoder"] = copy.deepcopy(nets["target_encoder"])
    return JEPAModels(nets["encoder"], nets["predictor"], nets["target_encoder"],
                      checkpoint_config(state),
                      {"path": str(path), "step": int(state.get("step", 0)),
                       "context_from_target": context_from_target})


def rng_state() -> dict[str, Any]:
    """Every global RNG (torch, numpy, python, cuda) as tensors/numbers, weights_only-loadable."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pstate, pgauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(pstate, dtype=torch.int64),
                   "gauss": pgauss},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(s: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved, so a resumed run draws the same numbers."""
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])



def export_checkpoint(src: str | Path, dst: str | Path, half: bool = True,
                      keep_context: bool = False) -> Path:
    """Write a small, inference-only copy of a kit checkpoint (how the shipped one is made).

    Drops the optimiser, RNG and data-stream state and, unless ``keep_context``, the context
    encoder: the I-JEPA evaluation convention uses the EMA target encoder, and at the end of the
    schedule (momentum -> 1) the two are nearly identical, so loaders that need a context
    encoder (predicted-vs-target latents) fall back to the target weights and say so. ``half``
    stores float tensors as float16; loading casts them back to float32.
    """
    state = load_checkpoint(src)
    keys = ["target_encoder", "predictor"] + (["encoder"] if keep_context else [])

    def cast(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                for k, v in sd.items()}

    out = {k: state[k] for k in ("format", "version", "step", "config")}
    out.update({k: cast(state[k]) for k in keys})
    out["exported"] = {"from": str(src), "half": half, "context_encoder": keep_context}
    return save_checkpoint(dst, out)


# ----------------------------------------------------------------------------- foreign formats

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
