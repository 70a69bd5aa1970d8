"""Every knob of a pretraining run, as plain dataclasses, and the ``--set`` overrides.

A student can read this one file to see what a run can change; the named presets built from
these dataclasses live in :mod:`radjepa_lab.presets`. The module imports no torch, so the
command line and its ``--help`` start fast and a config can be checked before anything heavy
loads.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from radjepa_lab.errors import ConfigError

__all__ = [
    "ENCODER_INITS",
    "LOSSES",
    "PATCH_INITS",
    "MaskConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
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
EQUALIZE = ("subsample", "truncate")
# Keys that older kit checkpoints stored in their config and that now live in the preset
# table (radjepa_lab.presets); they are recognised and dropped when such a file is read.
LEGACY_TRAIN_KEYS = ("expected_minutes", "description")


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
        for name in ("enc_scale", "pred_scale", "enc_aspect", "pred_aspect"):
            lo, hi = getattr(self, name)
            setattr(self, name, (float(lo), float(hi)))
            if not 0 < lo <= hi or (name.endswith("scale") and hi > 1):
                raise ConfigError(
                    f"MaskConfig.{name}=({lo}, {hi}) must satisfy 0 < low <= high"
                    + (" <= 1." if name.endswith("scale") else ".")
                )
        if self.n_targets < 1:
            raise ConfigError(f"MaskConfig.n_targets={self.n_targets} must be >= 1.")
        if self.min_keep < 1:
            raise ConfigError(f"MaskConfig.min_keep={self.min_keep} must be >= 1.")
        if self.equalize not in EQUALIZE:
            raise ConfigError(f"MaskConfig.equalize={self.equalize!r}: use one of {EQUALIZE}.")


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
    encoder_init: str = "kit"  # where training starts: "kit" (I-JEPA init) or "torch_default"
    qkv_bias: bool = True
    drop_path: float = 0.0
    init_std: float = 0.02
    norm_eps: float = 1e-6
    in_mean: float = 0.5
    in_std: float = 0.25

    def __post_init__(self) -> None:
        if self.patch_init not in PATCH_INITS:
            raise ConfigError(
                f"ModelConfig.patch_init={self.patch_init!r} is unknown; use one of {PATCH_INITS}."
            )
        if self.encoder_init not in ENCODER_INITS:
            raise ConfigError(
                f"ModelConfig.encoder_init={self.encoder_init!r} is unknown; "
                f"use one of {ENCODER_INITS}."
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
class TrainConfig:
    """One pretraining run. ``batch_size`` is the GLOBAL batch (split over DDP ranks).

    Schedules follow I-JEPA: LR linear warmup ``start_lr -> lr`` over ``warmup`` steps
    then cosine to ``final_lr``; weight decay cosine ``wd[0] -> wd[1]``; EMA momentum
    linear ``ema[0] -> ema[1]``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
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
        if self.loss not in LOSSES:
            raise ConfigError(f"TrainConfig.loss={self.loss!r} is unknown; use one of {LOSSES}.")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("TrainConfig.steps and batch_size must be >= 1.")
        if not 0 <= self.warmup <= self.steps:
            raise ConfigError(
                f"TrainConfig.warmup={self.warmup} must lie in [0, steps={self.steps}]."
            )
        if not (0.0 <= self.ema[0] <= self.ema[1] <= 1.0):
            raise ConfigError(f"TrainConfig.ema={self.ema} must satisfy 0 <= start <= end <= 1.")
        if self.crop_scale is not None and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"TrainConfig.crop_scale={self.crop_scale} must satisfy "
                              "0 < low <= high <= 1, or be None.")
        if self.bf16 not in (True, False, "auto"):
            raise ConfigError(f"TrainConfig.bf16={self.bf16!r}: use True, False or 'auto'.")

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
    return _build(TrainConfig, {**d, "model": model, "masks": masks}, "config")


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
    dev = torch.device(device)
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
