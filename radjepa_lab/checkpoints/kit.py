"""The kit's own checkpoint format (see :mod:`radjepa_lab.checkpoints`).

A kit checkpoint (``checkpoint.pt``) is a plain dict with ``format="radjepa_lab"``, the run's
config, its networks, the optimiser, every RNG state and the data-stream position, so
``resume=True`` continues an interrupted run bit-exactly. :func:`save_checkpoint` writes
atomically; :func:`load_checkpoint` is the only reader of the format; :func:`load_jepa` builds
the networks; :func:`export_checkpoint` writes the small inference-only copy the kit ships.
Every file is read with ``torch.load(weights_only=True)``: loading never runs pickled code.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radjepa_lab.atomic import atomic_write
from radjepa_lab.config import TrainConfig, config_from_dict
from radjepa_lab.errors import CheckpointError, ConfigError, OutputError
from radjepa_lab.models import (
    Predictor,
    VisionTransformer,
    build_dino_head,
    build_encoder,
    build_mae_decoder,
    build_predictor,
)
from radjepa_lab.monitors import METRICS_NAME

__all__ = [
    "CKPT_FORMAT",
    "CKPT_NAME",
    "CKPT_VERSION",
    "EVALUATED",
    "EXPORTED",
    "LOG_SUFFIX",
    "NETWORKS",
    "REPO_ROOT",
    "SHIPPED_CHECKPOINT",
    "SHIPPED_CHECKPOINTS",
    "SHIPPED_JEPA_SAME_BUDGET",
    "JEPAModels",
    "TrainedModels",
    "as_jepa",
    "checkpoint_config",
    "export_checkpoint",
    "load_checkpoint",
    "load_jepa",
    "load_trained",
    "load_weights",
    "require_entries",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "shipped_checkpoints",
    "training_log",
]

CKPT_NAME = "checkpoint.pt"
CKPT_FORMAT = "radjepa_lab"
CKPT_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CHECKPOINT = REPO_ROOT / "data" / "checkpoints" / "radjepa_lab_phantom.pt"
# The shipped checkpoint of each objective (notebook 09's default comparison; data/README.md).
# bench/objectives.sh trains DINO and MAE at the shipped JEPA's budget on a GPU; without one it
# trains all three at a CPU budget (cpu-long, or cpu: the files shipped now) and ships that JEPA
# run as well (radjepa_lab_phantom_jepa.pt), which the comparison then uses:
# shipped_checkpoints().
SHIPPED_CHECKPOINTS = {
    "jepa": SHIPPED_CHECKPOINT,
    "dino": SHIPPED_CHECKPOINT.with_name("radjepa_lab_phantom_dino.pt"),
    "mae": SHIPPED_CHECKPOINT.with_name("radjepa_lab_phantom_mae.pt"),
}
SHIPPED_JEPA_SAME_BUDGET = SHIPPED_CHECKPOINT.with_name("radjepa_lab_phantom_jepa.pt")
LOG_SUFFIX = ".metrics.jsonl"  # an exported checkpoint's training log: <name>.metrics.jsonl

# The networks a kit checkpoint of each objective holds (its state keys), the one every
# analysis evaluates, and what an exported copy keeps (plus, with keep_context, the online
# networks). DINO's run checkpoints also hold "dino_loss" (the teacher's centre, for resume).
NETWORKS: dict[str, tuple[str, ...]] = {
    "jepa": ("encoder", "predictor", "target_encoder"),
    "dino": ("encoder", "dino_head", "target_encoder", "target_dino_head"),
    "mae": ("encoder", "mae_decoder"),
}
EVALUATED = {"jepa": "target_encoder", "dino": "target_encoder", "mae": "encoder"}
EXPORTED = {"jepa": ("target_encoder", "predictor"),
            "dino": ("target_encoder", "target_dino_head"), "mae": ("encoder", "mae_decoder")}
_CONTEXT = {"jepa": ("encoder",), "dino": ("encoder", "dino_head"), "mae": ()}


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


def _want_shapes(cfg: TrainConfig, key: str) -> tuple[dict[str, tuple[int, ...]], int | None]:
    """The tensor shapes the config asks of network ``key``, and its block count (None: no
    blocks)."""
    model = cfg.model
    g = model.grid[0] * model.grid[1]
    big = model.embed_dim
    if key in ("dino_head", "target_dino_head"):
        h, b = cfg.dino.hidden_dim, cfg.dino.bottleneck_dim
        return {"mlp.0.weight": (h, big), "mlp.2.weight": (h, h), "mlp.4.weight": (b, h),
                "prototypes": (cfg.dino.out_dim, b)}, None
    if key == "dino_loss":
        return {"center": (1, cfg.dino.out_dim)}, None
    if key == "predictor":
        d, depth = model.pred_embed_dim, model.pred_depth
        want = {"predictor_embed.weight": (d, big), "pos_embed": (1, g, d), "proj.weight": (big, d)}
    elif key == "mae_decoder":
        d, depth = model.pred_embed_dim, model.pred_depth
        pix = model.patch_size * model.patch_size * model.in_chans
        want = {"embed.weight": (d, big), "pos_embed": (1, g, d), "pred.weight": (pix, d)}
    else:
        d, depth, p = big, model.depth, model.patch_size
        want = {"patch_embed.proj.weight": (d, model.in_chans, p, p), "pos_embed": (1, g, d)}
    want["blocks.0.mlp.fc1.weight"] = (int(d * model.mlp_ratio), d)
    return want, depth


def _check_shapes(sd: Mapping[str, torch.Tensor], cfg: TrainConfig, key: str,
                  where: Any) -> None:
    """The config's sizes against the stored tensors, BEFORE any network is built: a config
    that asks for a network larger than its weights (a hostile or edited file) is refused
    without allocating it. ``load_state_dict`` checks every remaining tensor afterwards."""
    want, depth = _want_shapes(cfg, key)
    for name, shape in want.items():
        got = sd.get(name)
        if got is None:
            raise CheckpointError(f"{where}: tensor {key}.{name} is missing; the file is "
                                  "incomplete or not a kit checkpoint.")
        if tuple(got.shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {key}.{name} has shape {tuple(got.shape)} but the stored "
                f"config asks for {shape}; config and weights disagree (the file was edited).")
    n = _block_count(sd, key, where) if depth is not None else None
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


def _weights(state: Mapping[str, Any], key: str, cfg: TrainConfig,
             where: Any) -> dict[str, torch.Tensor]:
    sd = _state_dict(state, key, where)
    _check_shapes(sd, cfg, key, where)
    return sd


def load_weights(net: torch.nn.Module, state: Mapping[str, Any], key: str, cfg: TrainConfig,
                 where: Any) -> torch.nn.Module:
    """Load ``state[key]`` into ``net`` (built from ``cfg``): finite tensors, shapes checked
    against ``cfg``, every key present and none extra; CheckpointError otherwise."""
    return _load(net, _weights(state, key, cfg, where), key, where)


def _build(key: str, cfg: TrainConfig) -> torch.nn.Module:
    if key == "predictor":
        return build_predictor(cfg.model)
    if key == "mae_decoder":
        return build_mae_decoder(cfg.model)
    if key in ("dino_head", "target_dino_head"):
        return build_dino_head(cfg.model, cfg.dino)
    return build_encoder(cfg.model)


def _kit_networks(state: Mapping[str, Any], keys: Sequence[str],
                  where: Any) -> dict[str, torch.nn.Module]:
    """Build and load the networks stored under ``keys`` (encoders, predictor, heads,
    decoder); every one's weights are checked against the stored config before any network
    is built."""
    cfg = checkpoint_config(state, where)
    sds = {key: _weights(state, key, cfg, where) for key in dict.fromkeys(keys)}
    return {key: _load(_build(key, cfg), sd, key, where).eval() for key, sd in sds.items()}


def _objective(state: Mapping[str, Any], where: Any) -> str:
    return checkpoint_config(state, where).objective


@dataclass
class TrainedModels:
    """Every network of one kit checkpoint of any objective, on CPU in eval mode.

    ``networks`` maps the checkpoint's keys (:data:`NETWORKS`) to modules; ``evaluated`` is the
    encoder every analysis and probe uses (:data:`EVALUATED`).
    """

    objective: str
    networks: dict[str, torch.nn.Module]
    config: TrainConfig
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluated(self) -> VisionTransformer:
        return self.networks[EVALUATED[self.objective]]  # type: ignore[return-value]


def _trained(state: Mapping[str, Any], path: Path) -> TrainedModels:
    objective = _objective(state, path)
    # the evaluated encoder and the objective's analysis network first (what an export keeps),
    # then the online networks (absent from an export unless it kept them)
    rest = [k for k in NETWORKS[objective] if k not in EXPORTED[objective]]
    if "exported" in state:
        rest = [k for k in rest if k in state]
    nets = _kit_networks(state, EXPORTED[objective] + tuple(rest), path)
    return TrainedModels(objective, nets, checkpoint_config(state, path),
                         {"path": str(path), "step": int(state.get("step", 0)),
                          "exported": "exported" in state})


def load_trained(path: str | Path | Any) -> TrainedModels:
    """The networks of a kit checkpoint of any objective (I-JEPA, DINO or MAE).

    An exported checkpoint holds only what :func:`export_checkpoint` kept (the evaluated
    encoder and the objective's analysis network: predictor, teacher head or decoder).
    ``path`` may be anything with a ``.path``.
    """
    path = Path(getattr(path, "path", path))
    return _trained(load_checkpoint(path), path)


@dataclass
class JEPAModels:
    """The three I-JEPA networks of one checkpoint, on CPU in eval mode."""

    encoder: VisionTransformer  # context encoder (gets gradients during training)
    predictor: Predictor
    target_encoder: VisionTransformer  # EMA copy; the I-JEPA evaluation convention
    config: TrainConfig
    info: dict[str, Any] = field(default_factory=dict)


def _not_jepa(objective: str, path: Any) -> CheckpointError:
    return CheckpointError(
        f"{path}: a {objective.upper()} checkpoint (objective={objective!r}) has no I-JEPA "
        "predictor; read it with radjepa_lab.checkpoints.load_trained, or its evaluated "
        "encoder with load_encoder.")


def as_jepa(run: TrainedModels) -> JEPAModels:
    """The three I-JEPA networks of a loaded I-JEPA checkpoint. An exported one keeps only the
    EMA target encoder; it then also serves as the context encoder
    (``info["context_from_target"]``)."""
    if run.objective != "jepa":
        raise _not_jepa(run.objective, run.info.get("path"))
    nets = run.networks
    context_from_target = "encoder" not in nets
    encoder = copy.deepcopy(nets["target_encoder"]) if context_from_target else nets["encoder"]
    return JEPAModels(encoder, nets["predictor"], nets["target_encoder"],  # type: ignore[arg-type]
                      run.config, {"path": run.info.get("path"), "step": run.info.get("step", 0),
                                   "context_from_target": context_from_target})


def load_jepa(path: str | Path | Any) -> JEPAModels:
    """Context encoder, predictor and EMA target encoder of a kit I-JEPA checkpoint.

    Exported checkpoints (:func:`export_checkpoint`, e.g. the shipped one) keep only the EMA
    target encoder; it then also serves as the context encoder (``info["context_from_target"]``).
    ``path`` may be anything with a ``.path`` (a notebook's checkpoint choice). A DINO or MAE
    checkpoint has no predictor: read it with :func:`load_trained`.
    """
    path = Path(getattr(path, "path", path))
    state = load_checkpoint(path)
    objective = _objective(state, path)
    if objective != "jepa":
        raise _not_jepa(objective, path)
    return as_jepa(_trained(state, path))


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
                      keep_context: bool = False, log: bool = True) -> Path:
    """Write a small, inference-only copy of a kit checkpoint (how the shipped ones are made).

    Drops the optimiser, RNG and data-stream state and, unless ``keep_context``, the context
    encoder: the I-JEPA evaluation convention uses the EMA target encoder, and at the end of the
    schedule (momentum -> 1) the two are nearly identical, so loaders that need a context
    encoder (predicted-vs-target latents) fall back to the target weights and say so. What is
    kept per objective is :data:`EXPORTED`'s entry (DINO: the teacher and its head; MAE: the
    encoder and its decoder). ``half`` stores float tensors as float16; loading casts them
    back to float32. With ``log``, the run's ``metrics.jsonl`` is copied beside the copy as
    ``<name>.metrics.jsonl`` (where :func:`training_log` finds it).
    """
    src, dst = Path(src), Path(dst)
    state = load_checkpoint(src)
    objective = _objective(state, src)
    keys = list(EXPORTED[objective]) + (list(_CONTEXT[objective]) if keep_context else [])

    def cast(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                for k, v in sd.items()}

    out = {k: state[k] for k in ("format", "version", "step", "config")}
    out.update({k: cast(state[k]) for k in keys})
    out["exported"] = {"from": str(src), "half": half, "context_encoder": keep_context}
    path = save_checkpoint(dst, out)
    run_log = src.parent / METRICS_NAME
    if log and run_log.is_file():
        log_copy = dst.with_name(dst.stem + LOG_SUFFIX)
        try:
            log_copy.write_bytes(run_log.read_bytes())
        except OSError as e:
            raise OutputError.from_os(e, log_copy, "the training log") from e
    return path


def shipped_checkpoints() -> dict[str, Path]:
    """The three shipped checkpoints of one budget, per objective: the shipped JEPA, or its
    same-budget CPU run when bench/objectives.sh shipped one (:data:`SHIPPED_JEPA_SAME_BUDGET`)."""
    jepa = SHIPPED_JEPA_SAME_BUDGET if SHIPPED_JEPA_SAME_BUDGET.is_file() else SHIPPED_CHECKPOINT
    return {**SHIPPED_CHECKPOINTS, "jepa": jepa}


def training_log(checkpoint: str | Path) -> Path:
    """The ``metrics.jsonl`` that belongs to a checkpoint: ``<name>.metrics.jsonl`` beside an
    exported copy, else the run folder's ``metrics.jsonl`` (which may not exist)."""
    checkpoint = Path(checkpoint)
    own = checkpoint.with_name(checkpoint.stem + LOG_SUFFIX)
    return own if own.is_file() else checkpoint.parent / METRICS_NAME
