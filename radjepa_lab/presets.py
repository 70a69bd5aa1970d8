"""Named presets, the notebook profiles, and the ONE table of per-profile sizes and times.

A *preset* is a complete :class:`~radjepa_lab.config.TrainConfig` with a name
(``radjepa-lab pretrain --preset cpu``). A *profile* is what notebooks, the demo and CI run:
``RADJEPA_LAB_PROFILE`` picks one (``auto`` -> ``gpu-short`` with CUDA, else ``cpu``; the
tests set ``smoke``), and :data:`PROFILE_TABLE` gives everything that scales with it: the
expected minutes of each notebook, the analysis notebooks' experiment sizes and the probe
protocol of the demo and ``bench/quality.py``. Times are measured (``bench/notebooks.py``,
``bench/RESULTS.md``); edit them here and nowhere else.

Like :mod:`radjepa_lab.config`, this module imports no torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from radjepa_lab.config import (
    OBJECTIVES,
    RUNTIME_FIELDS,
    MaskConfig,
    ModelConfig,
    TrainConfig,
    config_diff,
)
from radjepa_lab.errors import ConfigError

__all__ = [
    "CPU_BUDGET_MINUTES",
    "PRESETS",
    "PROFILES",
    "PROFILE_ENV",
    "PROFILE_TABLE",
    "NotebookSizes",
    "Preset",
    "ProbeSizes",
    "Profile",
    "ProfileRow",
    "get_preset",
    "preset_help",
    "preset_of",
    "resolve_profile",
    "with_objective",
]

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
    )


def _cpu_p8() -> TrainConfig:
    # The shipped checkpoint's model: ViT d192x6, p8 @64 px (an 8x8 grid). Target blocks of
    # 10-15 % of the grid and a context that keeps >= 26 of 64 tokens, xavier patch-embedding
    # init, peak LR 5e-4 after 80 warmup steps. 200 steps do not collapse it but are too few
    # to beat a random init; cpu-long and gpu-phantom train the same model longer.
    return TrainConfig(
        model=ModelConfig(),
        masks=MaskConfig(pred_scale=(0.10, 0.15), min_keep=26),
        steps=200, batch_size=64, lr=5e-4, start_lr=1e-4, warmup=80,
        n_train=1536, num_workers=2, log_every=10, ckpt_every=100, monitor_batch=128,
    )


def _cpu() -> TrainConfig:
    # Five CPU minutes, with an 8x8 grid (so masks, latents and attention stay legible). The
    # demo and notebook 03 fit the steps to 5 minutes of the machine they run on
    # (budget.fit_to_minutes); `steps` is what `pretrain --preset cpu` and the objectives
    # comparison run. From cpu-p8, each found by screening (bench/RESULTS.md):
    # * width 128 (2 heads; predictor 64 wide) instead of the shipped model's 192: a step costs
    #   about 2/3, and at this budget images seen are what a run learns from;
    # * a healthier start: the patch content enters 4x stronger beside the fixed sin-cos
    #   positions (in_std 0.0625) and the linears start at trunc-normal(0.04), near PyTorch's
    #   default scale. RankMe then never dips (alone, either one still dipped) and the run
    #   takes LR 1e-3, which collapsed RankMe from the default start;
    # * a fixed EMA of 0.995 instead of I-JEPA's 0.996 -> 1: its time constant 1 / (1 - m) of
    #   200 steps fits inside the run, so the evaluated target encoder follows the training;
    # * bf16 autocast where the CPU computes bf16 natively (about 1.4x the fp32 step here).
    cfg = _cpu_p8()
    cfg.model = ModelConfig(embed_dim=128, num_heads=2, pred_embed_dim=64, pred_num_heads=2,
                            in_std=0.0625, init_std=0.04)
    cfg.steps, cfg.ema, cfg.bf16 = 800, (0.995, 0.995), "auto"
    cfg.lr, cfg.start_lr, cfg.warmup = 1e-3, 1e-4, 80
    cfg.log_every, cfg.ckpt_every = 20, 250
    return cfg


def _cpu_long() -> TrainConfig:
    # cpu-p8's model and masks trained 15x longer: the CPU route to a model like the shipped one.
    cfg = _cpu_p8()
    cfg.steps, cfg.warmup, cfg.log_every, cfg.ckpt_every = 3000, 200, 25, 250
    return cfg


def _gpu_phantom() -> TrainConfig:
    # The recipe of the shipped checkpoint data/checkpoints/radjepa_lab_phantom.pt: cpu-p8's
    # model and masks, 8000 steps at batch 128 on 32768 cached phantoms.
    cfg = _cpu_p8()
    cfg.steps, cfg.warmup, cfg.batch_size, cfg.n_train = 8000, 400, 128, 32768
    cfg.log_every, cfg.ckpt_every, cfg.num_workers = 100, 1000, 4
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
    )


def with_objective(cfg: TrainConfig, objective: str) -> TrainConfig:
    """A copy of ``cfg`` that trains ``objective`` (``jepa``, ``dino`` or ``mae``) instead.

    Only the objective changes: the encoder, the data, steps x batch (so the number of images
    seen) and the LR / weight-decay / EMA schedules stay those of ``cfg``, so the three runs
    differ in what they learn from, nothing else. The objective's own knobs (``cfg.dino``,
    ``cfg.mae``) keep their defaults: DINO's multi-crop, head and temperatures; MAE's 75 % mask.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"with_objective({objective!r}): use one of {OBJECTIVES}.")
    out = dataclasses.replace(cfg, objective=objective)
    out.__post_init__()
    return out


def _objective_preset(build: Callable[[], TrainConfig], objective: str) -> Callable[[], TrainConfig]:
    def make() -> TrainConfig:
        return with_objective(build(), objective)

    make.__name__ = f"_{objective}_{build.__name__.lstrip('_')}"
    return make


@dataclass(frozen=True)
class Preset:
    """A named recipe: how to build its config, what it is for, and how long it takes."""

    build: Callable[[], TrainConfig]
    description: str
    minutes: Mapping[str, float]  # device type ("cpu", "cuda") -> expected pretraining minutes


PRESETS: dict[str, Preset] = {
    "smoke": Preset(_smoke, "seconds-long run for tests and CI", {"cpu": 0.2, "cuda": 0.2}),
    "cpu": Preset(_cpu, "ViT d128x6 p8 @64 px (an 8x8 grid), 800 steps at batch 64, bf16 where "
                  "native; the demo fits its steps to 5 minutes of your CPU",
                  {"cpu": 5.0, "cuda": 0.5}),
    "cpu-p8": Preset(_cpu_p8, "the shipped model (ViT d192x6 p8 @64 px) for 200 steps; too short "
                     "to learn", {"cpu": 3.0, "cuda": 0.5}),
    "cpu-long": Preset(_cpu_long, "cpu-p8's model for 3000 steps; the CPU route to a trained "
                       "model", {"cpu": 55.0, "cuda": 3.0}),
    "gpu-phantom": Preset(_gpu_phantom, "the shipped checkpoint's recipe: cpu-p8's model, 8000 "
                          "steps at batch 128 (GPU)", {"cuda": 5.0, "cpu": 400.0}),
    "gpu-short": Preset(_gpu_short, "ViT-S/16 @224 px; about 10-15 minutes on one H100-class GPU",
                        {"cuda": 12.0, "cpu": 2000.0}),
    "radjepa-b14": Preset(_radjepa_b14, "paper recipe, ViT-B/14 @224 px, for multi-GPU torchrun "
                          "runs", {"cuda": 60.0 * 24 * 3}),
}
# The contrast of notebook 09: the same encoder, data, steps x batch and schedules trained
# with DINO-style self-distillation or MAE reconstruction instead of I-JEPA (with_objective).
# Built from the JEPA builders, so they follow whatever `cpu`, `cpu-long` and `gpu-phantom`
# become. A DINO step takes 2.4-3x a JEPA step's time on CPU (8 views per image, 2 of them
# through the teacher), an MAE step 0.3x (the encoder sees a quarter of the patches):
# objectives.step_cost on the cpu and cpu-p8 models, bench/RESULTS.md.
_OBJECTIVE_COST = {"dino": 2.7, "mae": 0.3}
for _objective, _cost in _OBJECTIVE_COST.items():
    for _base in ("cpu", "cpu-long", "gpu-phantom"):
        _p = PRESETS[_base]
        PRESETS[f"{_objective}-{_base}"] = Preset(
            _objective_preset(_p.build, _objective),
            f"{_base} trained with the {_objective.upper()} objective (same encoder, data, "
            "steps x batch and schedules)",
            {d: round(m * _cost, 1) for d, m in _p.minutes.items()})


def get_preset(name: str) -> TrainConfig:
    """A fresh TrainConfig for a named preset (ConfigError on an unknown name)."""
    try:
        return PRESETS[name].build()
    except KeyError:
        raise ConfigError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.") from None


def preset_of(cfg: TrainConfig) -> str | None:
    """The name of the preset ``cfg`` is, runtime fields aside (device, workers, caching,
    compile), or None: how a shipped or exported checkpoint says which recipe trained it."""
    for name in PRESETS:
        if not any(k.split(".")[0] not in RUNTIME_FIELDS
                   for k in config_diff(get_preset(name), cfg)):
            return name
    return None


def preset_help() -> str:
    """One line per preset for ``--help``: name, what it is and its expected time."""
    def when(p: Preset) -> str:
        return ", ".join(f"~{m:g} min on {d}" for d, m in p.minutes.items())

    return "; ".join(f"{name}: {p.description} ({when(p)})" for name, p in PRESETS.items())


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class NotebookSizes:
    """How big the analysis notebooks' experiments are for one profile."""

    n_train: int  # phantoms to fit probes / heads / retrieval banks on
    n_test: int  # held-out phantoms to score them on
    n_umap: int  # points in the embedding map
    n_bank: int  # images in the nearest-patch bank
    n_resamples: int  # bootstrap resamples for CIs and paired tests
    seg_epochs: int  # epochs of the linear segmentation head
    mask_batches: int  # batches for mask coverage statistics
    ig_steps: int  # Integrated-Gradients steps
    projection: str = "umap"  # 2-D map method ("pca" skips numba's first-call compile)


@dataclass(frozen=True)
class ProbeSizes:
    """The probe protocol of ``make demo`` and ``bench/quality.py`` for one profile."""

    n_train: int
    n_test: int
    n_resamples: int


@dataclass(frozen=True)
class ProfileRow:
    """Everything that scales with one profile."""

    notebook_minutes: Mapping[str, float]  # notebook stem (or "exercise") -> expected minutes
    sizes: NotebookSizes
    probe: ProbeSizes


# Expected minutes of each notebook under (smoke, cpu, gpu-short), measured by bench/notebooks.py.
_NOTEBOOK_MINUTES: dict[str, tuple[float, float, float]] = {
    "00_data_tour": (0.3, 0.3, 0.3),
    "01_masking_sampler": (0.3, 0.4, 0.4),
    "02_encoders_and_predictor": (0.3, 0.4, 0.4),
    "03_pretraining": (0.6, 5.0, 14.0),
    "04_predicted_vs_target_latents": (0.5, 0.6, 0.6),
    "05_attention_maps": (0.5, 1.5, 1.0),
    "06_embeddings_umap": (0.8, 1.2, 1.2),
    "07_probes_and_segmentation": (0.5, 3.5, 3.0),
    "08_report_retrieval": (0.3, 1.0, 1.0),
    # 09 under cpu: 2.3 min measured (nbmake) with the shipped trio on a 2-core Intel Xeon that runs
    # the kit 1.9x faster than the AMD EPYC the other rows were measured on; gpu-short: an estimate
    "09_jepa_vs_dino_vs_mae": (0.6, 4.5, 5.0),
    "exercise": (0.2, 0.2, 0.2),
}


def _minutes(column: int) -> dict[str, float]:
    return {nb: row[column] for nb, row in _NOTEBOOK_MINUTES.items()}


PROFILE_TABLE: dict[str, ProfileRow] = {
    "smoke": ProfileRow(_minutes(0), NotebookSizes(160, 96, 128, 16, 200, 4, 20, 8, "umap"),
                        ProbeSizes(96, 48, 100)),
    "cpu": ProfileRow(_minutes(1), NotebookSizes(1500, 500, 800, 64, 1000, 30, 100, 32, "umap"),
                      ProbeSizes(1500, 500, 1000)),
    "gpu-short": ProfileRow(_minutes(2),
                            NotebookSizes(3000, 1000, 1500, 128, 1000, 40, 200, 64, "umap"),
                            ProbeSizes(2000, 1000, 1000)),
}

PROFILES = ("auto", *PROFILE_TABLE)
PROFILE_ENV = "RADJEPA_LAB_PROFILE"
# The `cpu` profile pretrains for this many minutes of the machine it runs on
# (budget.fit_to_minutes): the demo's and notebook 03's run, whatever the CPU.
CPU_BUDGET_MINUTES = 5.0


@dataclass
class Profile:
    """What a notebook runs: profile name, the preset it uses, device and its table row."""

    name: str
    preset: str
    device: str
    row: ProfileRow = field(repr=False)

    @property
    def description(self) -> str:
        """What the profile's preset is for (from :data:`PRESETS`)."""
        return PRESETS[self.preset].description

    @property
    def expected_minutes(self) -> float:
        """Expected minutes of the preset's pretraining on this device."""
        return PRESETS[self.preset].minutes.get(self.device, float("nan"))

    @property
    def budget_minutes(self) -> float | None:
        """Minutes of pretraining the demo and notebook 03 fit the preset's steps to
        (:func:`~radjepa_lab.budget.fit_to_minutes`): the ``cpu`` profile on a CPU; else None,
        the preset's own steps."""
        return CPU_BUDGET_MINUTES if self.preset == "cpu" and self.device == "cpu" else None

    @property
    def sizes(self) -> NotebookSizes:
        """Experiment sizes of the analysis notebooks for this profile."""
        return self.row.sizes

    @property
    def probe(self) -> ProbeSizes:
        """Probe protocol of the demo and the quality benchmark for this profile."""
        return self.row.probe

    def notebook_minutes(self, notebook: str) -> float | None:
        """Expected minutes of one notebook (``"03_pretraining"``, or ``"ex3_..."``)."""
        key = "exercise" if notebook.startswith("ex") else notebook
        return self.row.notebook_minutes.get(key)

    @property
    def config(self) -> TrainConfig:
        """A fresh copy of the preset's TrainConfig, with the resolved device filled in."""
        cfg = get_preset(self.preset)
        cfg.device = self.device
        return cfg

    def describe(self) -> str:
        """One line for the first notebook cell: the profile and the preset it pretrains."""
        cfg = get_preset(self.preset)
        m = cfg.model
        return (
            f"profile={self.name} device={self.device} | pretraining preset '{self.preset}': ViT "
            f"d{m.embed_dim}x{m.depth} p{m.patch_size} @{m.img_size}px, "
            + (f"batch {cfg.batch_size}, as many steps as fit {self.budget_minutes:g} min of this "
               "CPU" if self.budget_minutes else
               f"{cfg.steps} steps x batch {cfg.batch_size}, ~{self.expected_minutes:g} min")
        )


def resolve_profile(name: str | None = None) -> Profile:
    """Resolve the notebook profile from ``name`` or ``$RADJEPA_LAB_PROFILE`` (default ``auto``).

    Prints nothing: notebooks print ``profile.describe()`` themselves.
    """
    import torch

    raw = name if name is not None else os.environ.get(PROFILE_ENV, "auto")
    key = raw.strip().lower() or "auto"
    if key not in PROFILES:
        raise ConfigError(f"{PROFILE_ENV}={raw!r} is not a profile; use one of {list(PROFILES)}.")
    cuda = torch.cuda.is_available()
    preset = ("gpu-short" if cuda else "cpu") if key == "auto" else key
    return Profile(name=key, preset=preset, device="cuda" if cuda else "cpu",
                   row=PROFILE_TABLE[preset])
