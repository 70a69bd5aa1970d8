"""Every knob of a pretraining run, as plain dataclasses, and the ``--set`` overrides.

A student can read this one file to see what a run can change; the named presets built from
these dataclasses live in :mod:`radjepa_lab.presets`. The module imports no torch, so the
command line and its ``--help`` start fast and a config can be checked before anything heavy
loads.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from radjepa_lab.errors import ConfigError

__all__ = [
    "ENCODER_INITS",
    "LOSSES",
    "NETWORK_FIELDS",
    "OBJECTIVES",
    "PATCH_INITS",
    "DinoConfig",
    "MAEConfig",
    "MaskConfig",
    "ModelConfig",
    "TrainConfig",
    "RUNTIME_FIELDS",
    "Range",
    "apply_overrides",
    "check_fields",
    "config_diff",
    "config_field_names",
    "config_from_dict",
    "config_to_dict",
    "native_bf16",
    "resolve_device",
    "revalidate",
    "use_bf16",
    "with_steps",
]

PATCH_INITS = ("xavier", "trunc_normal", "torch_default")
ENCODER_INITS = ("kit", "torch_default")
LOSSES = ("smooth_l1", "l2")
# What the one trainer optimises (radjepa_lab.train): I-JEPA's latent prediction, DINO-style
# self-distillation, or MAE pixel reconstruction.
OBJECTIVES = ("jepa", "dino", "mae")
EQUALIZE = ("subsample", "truncate")
# Keys that older kit checkpoints stored in their config and that now live in the preset
# table (radjepa_lab.presets); they are recognised and dropped when such a file is read.
LEGACY_TRAIN_KEYS = ("expected_minutes", "description")
# Fields that change how a run is executed, not what it computes: a resumed run may change
# them without asking (e.g. resuming a GPU run on another machine). Every other change needs
# pretrain(allow_changes=...) / --set on the resume command.
RUNTIME_FIELDS = ("device", "compile", "num_workers", "cache_data")
# Fields besides model.* that decide which networks a checkpoint holds and their shapes: a
# resumed run can never change them (the weights only load into what they were trained as).
NETWORK_FIELDS = ("objective", "dino.out_dim", "dino.hidden_dim", "dino.bottleneck_dim")


# ----------------------------------------------------------------------------- allowed values


@dataclass(frozen=True)
class Range:
    """The allowed interval of a numeric knob: ``lo``/``hi`` (None = unbounded), each end closed
    unless ``*_open``. Every float must also be finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        return (f"in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}"
                f"{')' if self.hi_open else ']'}")


POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(0, lo_open=True), Range(0), Range(1)
FRACTION = Range(0, 1, lo_open=True)  # a share of the patch grid
SEED = Range(0, 2**31 - 1)

# Each knob's allowed values, beside its type annotation (which the checks read too): a Range
# for numbers (for a tuple: each element), a tuple of choices for strings. Knobs not listed
# are only type-checked. check_fields() applies this table whenever a config is built, read
# from a checkpoint, changed with --set, or handed to pretrain().
LIMITS: dict[str, dict[str, Range | tuple[Any, ...]]] = {
    "MaskConfig": {
        "enc_scale": FRACTION, "pred_scale": FRACTION, "enc_aspect": POSITIVE,
        "pred_aspect": POSITIVE, "n_targets": AT_LEAST_1, "min_keep": AT_LEAST_1,
        "equalize": EQUALIZE, "max_tries": AT_LEAST_1,
    },
    "ModelConfig": {
        "img_size": AT_LEAST_1, "patch_size": AT_LEAST_1, "in_chans": AT_LEAST_1,
        "embed_dim": AT_LEAST_1, "depth": AT_LEAST_1, "num_heads": AT_LEAST_1,
        "mlp_ratio": POSITIVE, "pred_embed_dim": AT_LEAST_1, "pred_depth": AT_LEAST_1,
        "pred_num_heads": AT_LEAST_1, "patch_init": PATCH_INITS, "encoder_init": ENCODER_INITS,
        "drop_path": Range(0, 1, hi_open=True), "init_std": POSITIVE, "norm_eps": POSITIVE,
        "in_std": POSITIVE,
    },
    "DinoConfig": {
        "n_local": NON_NEGATIVE, "global_scale": FRACTION, "local_scale": FRACTION,
        "local_size": AT_LEAST_1, "jitter": Range(0, 1), "out_dim": AT_LEAST_1,
        "hidden_dim": AT_LEAST_1, "bottleneck_dim": AT_LEAST_1, "student_temp": POSITIVE,
        "teacher_temp": POSITIVE, "warmup_teacher_temp": POSITIVE,
        "teacher_temp_warmup": Range(0, 1), "center_momentum": Range(0, 1),
        "freeze_prototypes": Range(0, 1),
    },
    "MAEConfig": {"mask_ratio": Range(0, 1, lo_open=True, hi_open=True)},
    "TrainConfig": {
        "objective": OBJECTIVES, "steps": AT_LEAST_1, "batch_size": AT_LEAST_1, "lr": POSITIVE,
        "start_lr": NON_NEGATIVE, "final_lr": NON_NEGATIVE, "warmup": NON_NEGATIVE,
        "wd": NON_NEGATIVE, "ema": Range(0, 1), "betas": Range(0, 1, hi_open=True),
        "loss": LOSSES, "smooth_l1_beta": NON_NEGATIVE, "grad_clip": POSITIVE, "seed": SEED,
        "phantom_size": AT_LEAST_1, "n_train": AT_LEAST_1, "log_every": AT_LEAST_1,
        "ckpt_every": AT_LEAST_1, "monitor_batch": AT_LEAST_1, "bf16": (True, False, "auto"),
        "num_workers": NON_NEGATIVE, "crop_scale": FRACTION,
    },
}
# How the command line spells a section's fields, for the "fix it with --set" hint.
_SET_PREFIX = {"MaskConfig": "masks.", "ModelConfig": "model.", "DinoConfig": "dino.",
               "MAEConfig": "mae.", "TrainConfig": ""}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _checked(value: Any, hint: Any, limit: Any) -> tuple[Any, str | None]:
    """``value`` converted to ``hint`` (ints to float, lists to tuples), or the problem."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(limit, tuple):  # choices (strings, or bf16's True/False/"auto")
        ok = any(value is c or (isinstance(c, str) and value == c) for c in limit)
        return value, None if ok else f"use one of {limit}"
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None, None
        (hint,) = [a for a in args if a is not type(None)]
        return _checked(value, hint, limit)
    if origin is tuple:
        if not isinstance(value, tuple | list) or len(value) != len(args):
            return value, f"must be a tuple of {len(args)} values"
        out = []
        for v, h in zip(value, args, strict=True):
            v, problem = _checked(v, h, limit)
            if problem:
                return value, f"element {v!r}: {problem}"
            out.append(v)
        return tuple(out), None
    if dataclasses.is_dataclass(hint):
        return value, None if isinstance(value, hint) else f"must be a {hint.__name__}"
    if hint is bool:
        return value, None if isinstance(value, bool) else "must be True or False"
    if hint is str:
        return value, None if isinstance(value, str) and value else "must be a non-empty string"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"must be an integer, not {type(value).__name__}"
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, f"must be a number, not {type(value).__name__}"
        value = float(value)
        if not math.isfinite(value):
            return value, "must be a finite number"
    else:  # pragma: no cover - a new annotation kind; teach _checked about it
        return value, f"has an annotation ({_type_name(hint)}) the checks do not know"
    if isinstance(limit, Range) and not limit.holds(value):
        return value, f"must be {limit}"
    return value, None


def check_fields(cfg: Any) -> None:
    """Type- and range-check every field of one config dataclass against its annotation and
    :data:`LIMITS` (normalising ints to floats and lists to tuples); ConfigError naming the
    field, its value, the rule and the fix. Nested configs are checked by their own
    ``__post_init__`` (see :func:`revalidate`)."""
    name = type(cfg).__name__
    limits = LIMITS.get(name, {})
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        fixed, problem = _checked(value, _hints(type(cfg))[f.name], limits.get(f.name))
        if problem:
            raise ConfigError(
                f"{name}.{f.name}={value!r} is invalid: {problem}. Fix it in your config or "
                f"with --set {_SET_PREFIX.get(name, '')}{f.name}=VALUE."
            )
        if fixed is not value:
            setattr(cfg, f.name, fixed)


@dataclass
class MaskConfig:
    """Scales are fractions of the patch grid; aspect is block height / width.

    Defaults are the I-JEPA paper's: context scale 0.85-1 (square), 4 targets of scale
    0.15-0.2 with aspect 0.75-1.5, ``min_keep`` 10. ``per_sample=False`` draws one block
    size per batch (reference); ``True`` draws a size for every block of every sample.
    ``max_tries`` bounds the redraws that give each context ``min_keep`` tokens.
    """

    enc_scale: tuple[float, float] = (0.85, 1.0)
    pred_scale: tuple[float, float] = (0.15, 0.2)
    enc_aspect: tuple[float, float] = (1.0, 1.0)
    pred_aspect: tuple[float, float] = (0.75, 1.5)
    n_targets: int = 4
    min_keep: int = 10
    per_sample: bool = False
    equalize: str = "subsample"
    allow_overlap: bool = False
    max_tries: int = 200

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("enc_scale", "pred_scale", "enc_aspect", "pred_aspect"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"MaskConfig.{name}=({lo}, {hi}) must satisfy low <= high.")


@dataclass
class ModelConfig:
    """Encoder + predictor shapes. Defaults are the shipped checkpoint's model (ViT d192x6, p8 @64 px).

    ``patch_init`` matters on small grayscale patches: with trunc-normal(0.02) the 8x8x1 patch
    content is ~5x weaker than the sin-cos position signal and I-JEPA finds a position-only
    trivial solution; xavier keeps content and position on a par. ``in_mean``/``in_std`` are
    the encoder's own input normalisation of [0, 1] images.
    """

    img_size: int = 64
    patch_size: int = 8
    in_chans: int = 1
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    pred_embed_dim: int = 96
    pred_depth: int = 3
    pred_num_heads: int = 3
    patch_init: str = "xavier"
    # where training starts: "kit" (the I-JEPA constructor's init, see models._init_kit) or
    # "torch_default"
    encoder_init: str = "kit"
    qkv_bias: bool = True
    drop_path: float = 0.0
    init_std: float = 0.02
    norm_eps: float = 1e-6
    in_mean: float = 0.5
    in_std: float = 0.25

    def __post_init__(self) -> None:
        check_fields(self)
        if self.patch_size > self.img_size:
            raise ConfigError(
                f"ModelConfig.patch_size={self.patch_size} is larger than "
                f"img_size={self.img_size}; use a patch that fits the image."
            )
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"ModelConfig.img_size={self.img_size} is not a multiple of "
                f"patch_size={self.patch_size}; pick sizes that divide evenly."
            )
        for dim, heads, name in (
            (self.embed_dim, self.num_heads, "embed_dim/num_heads"),
            (self.pred_embed_dim, self.pred_num_heads, "pred_embed_dim/pred_num_heads"),
        ):
            if dim % heads:
                raise ConfigError(f"ModelConfig.{name}: {dim} is not divisible by {heads}.")
            if dim % 4:
                raise ConfigError(
                    f"ModelConfig.{name}: width {dim} must be a multiple of 4 for 2-D sin-cos "
                    "position embeddings."
                )

    @property
    def grid(self) -> tuple[int, int]:
        g = self.img_size // self.patch_size
        return (g, g)


@dataclass
class DinoConfig:
    """DINO-style self-distillation (``TrainConfig.objective="dino"``; read only then).

    Defaults follow DINO (Caron et al. 2021) and DINOv2, the recipe behind Rad-DINO, scaled to
    the kit's small encoders: 2 global crops (scale 0.4-1) and ``n_local`` local crops (scale
    0.05-0.4) at ``local_size`` px (None: half the image, a multiple of the patch size). No
    flips (laterality matters on a chest X-ray) and, by default, no intensity jitter: ``jitter``
    > 0 adds DINO's colour jitter restricted to gray images (brightness and contrast of that
    strength, probability 0.8), but intensity carries diagnostic meaning on a radiograph and,
    on the ``cpu`` preset, jitter 0.4 drove the teacher's targets to uniform within 160 steps
    (bench/RESULTS.md). The head
    is a 3-layer MLP (``hidden_dim``) to a ``bottleneck_dim`` code and ``out_dim`` prototypes.
    Teacher temperature ``warmup_teacher_temp -> teacher_temp`` over the first
    ``teacher_temp_warmup`` of the run, student temperature ``student_temp``, teacher centre EMA
    ``center_momentum``; the prototypes stay frozen for the first ``freeze_prototypes`` of the
    run (DINO's ``freeze_last_layer``).
    """

    n_local: int = 6
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_size: int | None = None
    jitter: float = 0.0
    out_dim: int = 1024
    hidden_dim: int = 512
    bottleneck_dim: int = 128
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup: float = 0.3
    center_momentum: float = 0.9
    freeze_prototypes: float = 0.01

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"DinoConfig.{name}=({lo}, {hi}) must satisfy low <= high.")


@dataclass
class MAEConfig:
    """MAE-style reconstruction (``TrainConfig.objective="mae"``; read only then).

    ``mask_ratio`` of the patches are hidden (He et al. 2022: 0.75), the encoder sees the rest,
    and a light decoder of the predictor's shape (``ModelConfig.pred_*``) reconstructs the
    hidden patches' pixels, each patch normalised by its own mean and std when ``norm_pix``
    (MAE's ``norm_pix_loss``).
    """

    mask_ratio: float = 0.75
    norm_pix: bool = True

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class TrainConfig:
    """One pretraining run. ``batch_size`` is the GLOBAL batch (split over DDP ranks).

    Schedules follow I-JEPA: LR linear warmup ``start_lr -> lr`` over ``warmup`` steps
    then cosine to ``final_lr``; weight decay cosine ``wd[0] -> wd[1]``; EMA momentum
    linear ``ema[0] -> ema[1]``. ``objective`` picks what the one trainer optimises (``jepa``,
    ``dino`` or ``mae``); every other field means the same for all three (``masks`` is read by
    ``jepa`` only, ``dino`` and ``mae`` by their objective only, ``ema`` by the two with a
    teacher).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    objective: str = "jepa"
    dino: DinoConfig = field(default_factory=DinoConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    start_lr: float = 1e-4
    final_lr: float = 1e-6
    warmup: int = 50
    wd: tuple[float, float] = (0.04, 0.4)
    ema: tuple[float, float] = (0.996, 1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    loss: str = "smooth_l1"
    smooth_l1_beta: float = 1.0
    grad_clip: float | None = None
    seed: int = 0
    data: str = "phantoms"
    phantom_size: int | None = None  # None -> model.img_size
    n_train: int = 4096
    # RandomResizedCrop scale of the reference's pretraining data (e.g. (0.3, 1.0)); None = off
    crop_scale: tuple[float, float] | None = None
    cache_data: bool = True  # materialise the dataset once (uint8) so steps never wait on I/O
    # DataLoader workers: build the cache in parallel, or (cache_data=False) generate/read
    # images on the fly every step
    log_every: int = 10
    ckpt_every: int = 100
    monitor_batch: int = 128  # fixed images for RankMe / feature-std monitors
    device: str = "auto"
    # bf16 autocast: True, False, or "auto" = where the hardware computes bf16 natively (a GPU,
    # or a CPU with AVX512-BF16 / AMX); emulated bf16 on other CPUs is slower than fp32
    bf16: bool | str = False
    compile: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.warmup > self.steps:
            raise ConfigError(
                f"TrainConfig.warmup={self.warmup} must lie in [0, steps={self.steps}]."
            )
        if self.ema[0] > self.ema[1]:
            raise ConfigError(f"TrainConfig.ema={self.ema} must satisfy 0 <= start <= end <= 1.")
        if self.crop_scale is not None and self.crop_scale[0] > self.crop_scale[1]:
            raise ConfigError(f"TrainConfig.crop_scale={self.crop_scale} must satisfy "
                              "low <= high.")
        local, p = self.dino.local_size, self.model.patch_size
        if local is not None and (local % p or local > self.model.img_size):
            raise ConfigError(
                f"DinoConfig.local_size={local} must be a multiple of the patch size {p} and "
                f"at most img_size={self.model.img_size}; fix it with --set dino.local_size=N.")

    @property
    def local_px(self) -> int:
        """Size of DINO's local crops: ``dino.local_size``, or half the image rounded down to a
        multiple of the patch size (at least one patch)."""
        p = self.model.patch_size
        return self.dino.local_size or max(p, self.model.img_size // 2 // p * p)

    @property
    def phantom_px(self) -> int:
        """Size phantoms are generated at (images are resized to ``model.img_size``)."""
        return self.phantom_size or self.model.img_size


# ----------------------------------------------------------------------------- (de)serialise


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain dict (lists, not tuples) so it survives JSON and ``torch.load(weights_only=True)``."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} for {cls.__name__}.")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict` (unknown keys raise ConfigError)."""
    d = {k: v for k, v in d.items() if k not in LEGACY_TRAIN_KEYS}
    model = _build(ModelConfig, dict(d.pop("model", {})), "config.model")
    masks = _build(MaskConfig, dict(d.pop("masks", {})), "config.masks")
    # dino and mae came with issue 21; older checkpoints (JEPA only) get their defaults
    dino = _build(DinoConfig, dict(d.pop("dino", {})), "config.dino")
    mae = _build(MAEConfig, dict(d.pop("mae", {})), "config.mae")
    return _build(TrainConfig, {**d, "model": model, "masks": masks, "dino": dino, "mae": mae},
                  "config")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_field_names() -> set[str]:
    """Every dotted field name (``lr``, ``model.depth``, ``masks.pred_scale`` ...)."""
    return set(_flat(config_to_dict(TrainConfig())))


def config_diff(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (old value, new value)}`` for every field that differs."""
    a, b = _flat(config_to_dict(old)), _flat(config_to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


# ----------------------------------------------------------------------------- overrides


def revalidate(cfg: Any) -> None:
    """Re-run every nested dataclass's checks, so ``--set model.patch_init=bogus`` fails now."""
    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        revalidate(getattr(cfg, f.name))
    if hasattr(cfg, "__post_init__"):
        cfg.__post_init__()


def apply_overrides(cfg: TrainConfig, items: Sequence[str]) -> TrainConfig:
    """Apply ``key=value`` overrides (dotted keys reach nested configs), parsing values as Python
    literals where possible, so every knob is reachable from the command line (nanoGPT style)."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=5e-4")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        target, *rest = key.split(".")[::-1]
        obj: Any = cfg
        for part in reversed(rest):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigError(f"--set {item!r}: config has no section {part!r}")
        if not hasattr(obj, target):
            raise ConfigError(f"--set {item!r}: {type(obj).__name__} has no field {target!r}")
        if isinstance(getattr(obj, target), tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(obj, target, value)
    revalidate(cfg)
    return cfg


def with_steps(cfg: TrainConfig, steps: int | None) -> TrainConfig:
    """``--steps N``: shorten (or lengthen) a run; the warmup is capped at N so a short trial
    run of a long preset stays a valid config instead of failing validation."""
    if steps is not None:
        cfg.steps = steps
        cfg.warmup = min(cfg.warmup, steps)
        revalidate(cfg)
    return cfg


# ----------------------------------------------------------------------------- device


def resolve_device(device: Any = "auto") -> Any:
    """``auto`` (or None) -> cuda if available else cpu, as a ``torch.device``; explicit names
    are checked, not silently changed. torch is imported here, not at module import."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda' "
                          "or 'cuda:N'.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} was requested but CUDA is not available; use 'auto' or 'cpu'."
        )
    return dev


def native_bf16(device: Any) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX tiles (elsewhere bf16 is emulated and slower than fp32)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def use_bf16(cfg: TrainConfig, device: Any) -> bool:
    """Resolve ``cfg.bf16`` (True / False / "auto") for ``device``."""
    return native_bf16(device) if cfg.bf16 == "auto" else bool(cfg.bf16)
