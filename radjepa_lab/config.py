"""Configuration dataclasses, named presets and the notebook profile.

Every knob of pretraining lives here, so a student can read one file to see
what a preset does and so no other module hides a magic number. Presets are
plain functions returning fresh dataclasses: editing one run's config never
leaks into the next.

Profiles are what notebooks and CI use: ``RADJEPA_LAB_PROFILE`` picks one
(``auto`` -> ``gpu-short`` with CUDA, else ``cpu``; the tests set ``smoke``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from radjepa_lab.errors import ConfigError
from radjepa_lab.masks import MaskConfig

__all__ = [
    "MaskConfig",
    "ModelConfig",
    "TrainConfig",
    "PRESETS",
    "PROFILES",
    "Profile",
    "config_from_dict",
    "config_to_dict",
    "get_preset",
    "resolve_device",
    "resolve_profile",
]

PATCH_INITS = ("xavier", "trunc_normal", "torch_default")
ENCODER_INITS = ("kit", "torch_default")
LOSSES = ("smooth_l1", "l2")


@dataclass
class ModelConfig:
    """Encoder + predictor shapes. Defaults are the shipped checkpoint's model (ViT d192x6, p8 @64 px).

    ``patch_init`` matters on small grayscale patches: with trunc-normal(0.02) the
    8x8x1 patch content is ~5x weaker than the sin-cos position signal and I-JEPA
    finds a position-only trivial solution; xavier keeps content and position on a
    par (see shared/research/learning-signal.md).
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
    cache_data: bool = True  # materialise the dataset once (uint8) so steps never wait on I/O
    # DataLoader workers: build the cache in parallel, or (cache_data=False) generate/read
    # images on the fly every step
    log_every: int = 10
    ckpt_every: int = 100
    monitor_batch: int = 128  # fixed images for RankMe / feature-std monitors
    device: str = "auto"
    bf16: bool = False
    compile: bool = False
    num_workers: int = 0
    expected_minutes: dict[str, float] = field(default_factory=dict)  # per device type
    description: str = ""

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

    @property
    def phantom_px(self) -> int:
        """Size phantoms are generated at (images are resized to ``model.img_size``)."""
        return self.phantom_size or self.model.img_size


# ----------------------------------------------------------------------------- presets


def _smoke() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(
            img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2,
            pred_embed_dim=32, pred_depth=1, pred_num_heads=2,
        ),
        masks=MaskConfig(pred_scale=(0.15, 0.2), min_keep=4),
        steps=40, batch_size=16, lr=1e-3, start_lr=1e-4, warmup=5,
        n_train=128, log_every=5, ckpt_every=20, monitor_batch=32,
        expected_minutes={"cpu": 0.2, "cuda": 0.2},
        description="seconds-long run for tests and CI",
    )


def _cpu_p8() -> TrainConfig:
    # The shipped checkpoint's model (ViT d192x6, p8 @64 px, an 8x8 grid) for 200 steps: the
    # `cpu` preset up to 2026-11-28. Smaller target blocks and a context that keeps >= 26 of 64
    # tokens (no truncation to a tiny batch minimum), xavier patch-embedding init, peak LR 5e-4,
    # warmup 80 (with 20, RankMe of the target features fell 22.4 -> 21.0). It does not collapse
    # but 200 steps are too few to beat the stronger random init (README "Learning signal");
    # cpu-long and gpu-phantom train the same model much longer.
    return TrainConfig(
        model=ModelConfig(),
        masks=MaskConfig(pred_scale=(0.10, 0.15), min_keep=26),
        steps=200, batch_size=64, lr=5e-4, start_lr=1e-4, warmup=80,
        n_train=1536, num_workers=2, log_every=10, ckpt_every=100, monitor_batch=128,
        expected_minutes={"cpu": 3.0, "cuda": 0.5},
        description="ViT d192x6 p8 @64 px, 200 steps; about 3 minutes on 2 CPU cores, too "
        "short to learn",
    )


def _cpu() -> TrainConfig:
    # The short CPU preset, 2-5 minutes on 2 cores (measured, README "Learning signal").
    # Changes from cpu-p8, all found by screening on validation phantoms:
    # * 16 px patches (a 4x4 grid of 16 tokens): a step costs about a third of an 8x8-grid
    #   step on 2 cores, so a few minutes hold several times more steps;
    # * input scale in_std 0.0625 instead of 0.25, so the patch content enters the patch
    #   embedding 4x larger beside the fixed sin-cos position signal (the reason for
    #   patch_init="xavier" on the 8x8 grid; trunc_normal, weaker still, dips to 44 % of init).
    #   At 0.25 RankMe dipped to 84 % of init while a few leading directions grew;
    # * a gentle schedule: batch 32 for 1360 steps (the same 2.9 epochs of 1536 phantoms as
    #   batch 64 x 680, about 13 % slower per image), LR 1e-5 -> 3e-4 over 500 warmup steps,
    #   and a fixed EMA of 0.995 instead of I-JEPA's 0.996 -> 1. The EMA time constant
    #   1 / (1 - m) is 200 steps, well inside the run; at 0.996 -> 1 the evaluated target
    #   encoder stays near its random init in a run this short. With LR 5e-4 and EMA 0.99 RankMe still dipped to
    #   99 % of init at step 80; with this schedule no log falls below the first.
    # min_keep is scaled to the 16-token grid. Masks and data are cpu-p8's.
    cfg = _cpu_p8()
    cfg.model = ModelConfig(patch_size=16, in_std=0.0625)
    cfg.masks = dataclasses.replace(cfg.masks, min_keep=6)
    cfg.steps, cfg.batch_size, cfg.ema = 1360, 32, (0.995, 0.995)
    cfg.lr, cfg.start_lr, cfg.warmup = 3e-4, 1e-5, 500
    cfg.log_every, cfg.ckpt_every = 40, 680
    cfg.expected_minutes = {"cpu": 4.0, "cuda": 0.5}
    cfg.description = (
        "ViT d192x6 p16 @64 px, input std 0.0625, 1360 steps at batch 32, EMA 0.995; 2-5 "
        "minutes on 2 CPU cores"
    )
    return cfg


def _cpu_long() -> TrainConfig:
    # The CPU recipe for a checkpoint like the shipped one: cpu-p8's model and masks trained
    # 15x longer (about 55 minutes on 2 CPU cores; it reaches about half the gain of
    # gpu-phantom, see the README's "Learning signal").
    cfg = _cpu_p8()
    cfg.steps, cfg.warmup, cfg.log_every, cfg.ckpt_every = 3000, 200, 25, 250
    cfg.expected_minutes = {"cpu": 55.0, "cuda": 3.0}
    cfg.description = (
        "cpu-p8 model, 3000 steps (~55 min on 2 cores); CPU route to a trained model"
    )
    return cfg


def _gpu_phantom() -> TrainConfig:
    # The recipe of the shipped checkpoint data/checkpoints/radjepa_lab_phantom.pt: cpu-p8's
    # model and masks, 8000 steps at batch 128 on 32768 cached phantoms (about 5 minutes on
    # one H200). On CPU it would take hours; cpu-long is the CPU alternative.
    cfg = _cpu_p8()
    cfg.steps, cfg.warmup, cfg.batch_size, cfg.n_train = 8000, 400, 128, 32768
    cfg.log_every, cfg.ckpt_every, cfg.num_workers = 100, 1000, 4
    cfg.expected_minutes = {"cuda": 5.0, "cpu": 400.0}
    cfg.description = "the shipped checkpoint's recipe: cpu-p8 model, 8000 steps at batch 128 (GPU)"
    return cfg


def _gpu_short() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(
            img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
            pred_embed_dim=192, pred_depth=6, pred_num_heads=6,
        ),
        masks=MaskConfig(),
        steps=12_000, batch_size=256, lr=5e-4, start_lr=5e-5, warmup=1_000,
        n_train=16_384, log_every=50, ckpt_every=2_000, monitor_batch=256,
        bf16=True, compile=False, num_workers=14,
        expected_minutes={"cuda": 12.0, "cpu": 2000.0},
        description="ViT-S/16 @224 px; about 10-15 minutes on one H100-class GPU",
    )


def _radjepa_b14() -> TrainConfig:
    # I-JEPA paper recipe (ViT-B): predictor 384 wide x 6 deep, AdamW, LR 1e-4 -> 1e-3
    # warmup then cosine to 1e-6, wd 0.04 -> 0.4, EMA 0.996 -> 1, global batch 2048.
    return TrainConfig(
        model=ModelConfig(
            img_size=224, patch_size=14, embed_dim=768, depth=12, num_heads=12,
            pred_embed_dim=384, pred_depth=6, pred_num_heads=12,
        ),
        masks=MaskConfig(),
        steps=100_000, batch_size=2048, lr=1e-3, start_lr=1e-4, final_lr=1e-6, warmup=7_500,
        n_train=100_000, cache_data=False, data="phantoms", log_every=50, ckpt_every=2000,
        monitor_batch=512, bf16=True, compile=True, num_workers=10,
        expected_minutes={"cuda": 60.0 * 24 * 3},
        description="paper recipe, ViT-B/14 @224 px, for multi-GPU torchrun runs",
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "smoke": _smoke,
    "cpu": _cpu,
    "cpu-p8": _cpu_p8,
    "cpu-long": _cpu_long,
    "gpu-phantom": _gpu_phantom,
    "gpu-short": _gpu_short,
    "radjepa-b14": _radjepa_b14,
}


def get_preset(name: str) -> TrainConfig:
    """A fresh TrainConfig for a named preset (ConfigError on an unknown name)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(
            f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}."
        ) from None


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
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} for {cls.__name__}.")
    kw = {}
    for k, v in d.items():
        if isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict` (unknown keys raise ConfigError)."""
    d = dict(d)
    model = _build(ModelConfig, dict(d.pop("model", {})), "config.model")
    masks = _build(MaskConfig, dict(d.pop("masks", {})), "config.masks")
    d["expected_minutes"] = dict(d.get("expected_minutes", {}))
    return _build(TrainConfig, {**d, "model": model, "masks": masks}, "config")


# ----------------------------------------------------------------------------- device & profile


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) -> cuda if available else cpu; explicit names are checked, not
    silently changed."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} was requested but CUDA is not available; use 'auto' or 'cpu'."
        )
    return dev


PROFILES = ("auto", "smoke", "cpu", "gpu-short")
PROFILE_ENV = "RADJEPA_LAB_PROFILE"


@dataclass
class Profile:
    """What a notebook runs: profile name, the preset it uses, device and expected minutes."""

    name: str
    preset: str
    device: str
    expected_minutes: float

    @property
    def config(self) -> TrainConfig:
        """A fresh copy of the preset's TrainConfig, with the resolved device filled in."""
        cfg = get_preset(self.preset)
        cfg.device = self.device
        return cfg

    def describe(self) -> str:
        """One line for the first notebook cell."""
        cfg = get_preset(self.preset)
        m = cfg.model
        return (
            f"profile={self.name} preset={self.preset} device={self.device} "
            f"expected ~{self.expected_minutes:g} min | ViT d{m.embed_dim}x{m.depth} "
            f"p{m.patch_size} @{m.img_size}px, {cfg.steps} steps x batch {cfg.batch_size}"
        )


def resolve_profile(name: str | None = None) -> Profile:
    """Resolve the notebook profile from ``name`` or ``$RADJEPA_LAB_PROFILE`` (default ``auto``).

    Prints nothing: notebooks print ``profile.describe()`` themselves.
    """
    raw = name if name is not None else os.environ.get(PROFILE_ENV, "auto")
    key = raw.strip().lower() or "auto"
    if key not in PROFILES:
        raise ConfigError(
            f"{PROFILE_ENV}={raw!r} is not a profile; use one of {list(PROFILES)}."
        )
    cuda = torch.cuda.is_available()
    preset = ("gpu-short" if cuda else "cpu") if key == "auto" else key
    device = "cuda" if cuda else "cpu"
    minutes = get_preset(preset).expected_minutes.get(device, float("nan"))
    return Profile(name=key, preset=preset, device=device, expected_minutes=minutes)
