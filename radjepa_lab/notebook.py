"""The notebook seam: what every course notebook's first cells call, and nothing else.

They live here, not in the notebooks, so a notebook's first cell is one line and so the tests
can check them. Nothing here trains or analyses: that is the rest of the library, and each
helper a notebook teaches lives beside its concept (masks, dicom, viz).

* :func:`setup` is the first code cell of every notebook: it resolves the profile
  (``RADJEPA_LAB_PROFILE``: ``auto`` -> ``gpu-short`` with CUDA, else ``cpu``; tests set
  ``smoke``), seeds every RNG and prints device, profile and this notebook's expected run
  time from :data:`radjepa_lab.presets.PROFILE_TABLE`. The profile is the ONLY knob that
  differs between a classroom and CI; ``profile.sizes`` sizes the analysis notebooks.
* :func:`analysis_models` loads what notebooks 04-08 analyse: the shipped checkpoint and, once
  ``03_pretraining`` has run, your run beside it; it says which one each figure shows.
* :func:`comparison_runs` finds what ``09_jepa_vs_dino_vs_mae`` compares: the shipped I-JEPA,
  DINO and MAE checkpoints, or (smoke profile) three tiny runs it trains on the spot.
* :class:`LiveCurves` redraws the training curves while ``03_pretraining`` runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radjepa_lab.checkpoints import (
    CKPT_NAME,
    REPO_ROOT,
    SHIPPED_CHECKPOINT,
    SHIPPED_CHECKPOINTS,
    JEPAModels,
    checkpoint_config,
    load_checkpoint,
    load_jepa,
    shipped_checkpoints,
)
from radjepa_lab.config import TrainConfig
from radjepa_lab.errors import CheckpointError
from radjepa_lab.presets import Profile, resolve_profile

__all__ = [
    "REPO_ROOT",
    "RUNS_DIR",
    "SHIPPED_CHECKPOINT",
    "AnalysedModel",
    "ClaimFailed",
    "LiveCurves",
    "analysis_models",
    "claim",
    "comparison_runs",
    "enable_inline_figures",
    "fresh_run_dir",
    "seed_everything",
    "setup",
]

RUNS_DIR = REPO_ROOT / "runs" / "notebooks"


# ----------------------------------------------------------------------------- setup


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so a notebook re-runs to the same pictures."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def enable_inline_figures() -> bool:
    """Make a returned ``matplotlib.figure.Figure`` render as a PNG in Jupyter.

    The kit's ``viz`` functions build figures without pyplot, and the Makefile exports
    ``MPLBACKEND=Agg``; in both cases IPython would otherwise print ``<Figure size ...>``.
    Returns False outside IPython (plain Python, tests), where nothing needs doing.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with jupyter
        return False
    ip = get_ipython()
    if ip is None:
        return False
    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure

    png = ip.display_formatter.formatters["image/png"]
    png.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight", dpi=90))
    return True


def setup(
    notebook: str | None = None,
    seed: int = 0,
    name: str | None = None,
    verbose: bool = True,
) -> Profile:
    """First cell of every notebook: resolve the profile, seed, print what will run.

    ``notebook`` is the notebook's stem (``"03_pretraining"``, ``"ex3_jepa_loss"``); its
    expected run time comes from the profile table (measured by ``bench/notebooks.py``).
    Without it the preset's pretraining time is shown. ``name`` overrides
    ``RADJEPA_LAB_PROFILE`` (rarely needed).
    """
    profile = resolve_profile(name)
    seed_everything(seed)
    enable_inline_figures()
    if verbose:
        est = profile.notebook_minutes(notebook) if notebook else None
        what = "this notebook" if est is not None else "pretraining with this preset"
        est = profile.expected_minutes if est is None else est
        print(f"RadJEPA Lab | {profile.describe()}")
        print(
            f"device: {profile.device} ({torch.get_num_threads()} CPU threads), torch "
            f"{torch.__version__} | expected run time of {what}: ~{est:g} min | seed {seed}"
        )
        if profile.name == "smoke":
            print("smoke profile: tiny sizes for tests/CI; pictures are NOT meaningful.")
    return profile


# ----------------------------------------------------------------------------- checkpoints


def fresh_run_dir(profile: Profile) -> Path:
    """Where ``03_pretraining`` writes its run for this profile (``runs/`` is git-ignored).

    One folder per preset, so a tiny smoke run left behind by ``make test`` is never
    mistaken for a classroom ``cpu`` run.
    """
    return RUNS_DIR / profile.preset


MODEL_KEYS = ("shipped", "yours")


@dataclass
class AnalysedModel:
    """One model a notebook analyses: the shipped checkpoint or your run from 03_pretraining."""

    key: str  # "shipped" or "yours"
    path: Path
    step: int
    config: TrainConfig
    jepa: JEPAModels

    @property
    def label(self) -> str:
        return "shipped checkpoint" if self.key == "shipped" else "your 03 run"

    def describe(self) -> str:
        m = self.config.model
        try:
            shown = self.path.relative_to(REPO_ROOT)
        except ValueError:
            shown = self.path
        g = m.grid
        return (f"{self.label}: {shown} (step {self.step}, ViT d{m.embed_dim}x{m.depth} "
                f"p{m.patch_size} @{m.img_size}px, a {g[0]}x{g[1]} token grid)")


def analysis_models(profile: Profile | None = None, main: str = "shipped",
                    shipped: Path | None = None, verbose: bool = True) -> dict[str, AnalysedModel]:
    """The models notebooks 04-08 analyse, ``main`` first: the shipped checkpoint (trained on a
    GPU) and, once ``03_pretraining`` has run with this profile, your run beside it.

    Prints which model is analysed and which sits beside it, so a figure never silently shows
    another model. CheckpointError (saying how to fix it) when ``main`` is missing or unreadable.
    """
    if main not in MODEL_KEYS:
        raise CheckpointError(f"analysis_models(main={main!r}): use one of {MODEL_KEYS}.")
    profile = profile or resolve_profile()
    paths = {"shipped": SHIPPED_CHECKPOINT if shipped is None else Path(shipped),
             "yours": fresh_run_dir(profile) / CKPT_NAME}
    fixes = {"shipped": f"restore it with `git checkout -- {paths['shipped'].name}` (data/README.md)",
             "yours": "run notebooks/03_pretraining.ipynb first"}
    models: dict[str, AnalysedModel] = {}
    notes = []
    for key in sorted(MODEL_KEYS, key=lambda k: k != main):
        try:
            jepa = load_jepa(paths[key])
        except CheckpointError as e:
            if key == main:
                raise CheckpointError(f"{e} To analyse it, {fixes[key]}.") from None
            label = "your 03 run" if key == "yours" else "shipped checkpoint"
            why = "not found" if not paths[key].exists() else f"unreadable ({e})"
            notes.append(f"beside it: {label}: {why}; {fixes[key]} to see it here")
            continue
        models[key] = AnalysedModel(key, paths[key], int(jepa.info["step"]), jepa.config, jepa)
    if verbose:
        lines = [f"{'analysing' if k == main else 'beside it'}: {m.describe()}"
                 for k, m in models.items()]
        print("\n".join(lines + notes))
    return models


def comparison_runs(profile: Profile, verbose: bool = True) -> dict[str, tuple[Path, str]]:
    """What notebook 09 compares, per objective (``jepa``, ``dino``, ``mae``): a checkpoint and
    how it was trained.

    Under the ``smoke`` profile it trains the smoke preset with each objective (seconds each,
    ``runs/notebooks/09_objectives/``; pictures not meaningful). Otherwise it returns the
    shipped checkpoints (:func:`~radjepa_lab.checkpoints.shipped_checkpoints`), which share one
    encoder, data, steps x batch and schedules; CheckpointError naming the command that makes a
    missing one.
    """
    from radjepa_lab.demo import SHIPPED_HOW_BY_OBJECTIVE

    if profile.name == "smoke":
        from radjepa_lab.presets import with_objective
        from radjepa_lab.train import pretrain

        out: dict[str, tuple[Path, str]] = {}
        for objective in SHIPPED_CHECKPOINTS:
            cfg = with_objective(profile.config, objective)
            res = pretrain(cfg, RUNS_DIR / "09_objectives" / objective, progress=False,
                           overwrite=True)
            out[objective] = (res.checkpoint, f"--preset smoke with objective={objective} "
                              f"({cfg.steps} steps x batch {cfg.batch_size}, just now)")
        if verbose:
            print("smoke profile: trained three tiny runs (one per objective) just now")
        return out
    shipped = shipped_checkpoints()
    missing = [p for p in shipped.values() if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"{', '.join(p.name for p in missing)} not found in {missing[0].parent}: train and "
            "export them with `bash bench/objectives.sh` (bench/RESULTS.md says how long it "
            "takes), or run this notebook with RADJEPA_LAB_PROFILE=smoke.")
    if verbose:
        print("comparing the shipped checkpoints: " + ", ".join(p.name for p in shipped.values()))
    return {o: (p, _recipe(p, SHIPPED_HOW_BY_OBJECTIVE[o])) for o, p in shipped.items()}


def _recipe(path: Path, default: str) -> str:
    """How a shipped checkpoint was trained, read off its stored config (the preset it is, its
    steps x batch), so the label stays true whichever budget bench/objectives.sh shipped."""
    from radjepa_lab.presets import preset_of

    cfg = checkpoint_config(load_checkpoint(path))
    name = preset_of(cfg)
    if name is None:
        return default
    budget = name.removeprefix(f"{cfg.objective}-")  # dino-cpu -> cpu; a JEPA preset stays
    return (f"radjepa-lab pretrain --preset {name} ({cfg.steps} steps x batch {cfg.batch_size} "
            f"on {cfg.n_train} phantoms), then checkpoints.export_checkpoint "
            f"(bash bench/objectives.sh {budget})")


# ----------------------------------------------------------------------------- live curves


class LiveCurves:
    """A ``pretrain`` callback that redraws the training curves in place while it runs.

    In Jupyter it updates one display area (at most every ``every_s`` seconds, so drawing
    never dominates a fast run); elsewhere it only collects the records. Pass ``history``
    (e.g. of a first session) to continue its curves after ``resume=True``. With
    ``total_steps`` it prints, once, this machine's measured images/s and the time left, after
    the first full logging window (the table's estimate cannot know how loaded a machine is).
    """

    def __init__(self, keys: tuple[str, ...] = ("loss", "lr", "momentum", "rankme", "feat_std"),
                 title: str = "Pretraining (live)", every_s: float = 3.0,
                 history: list[dict[str, Any]] | None = None,
                 total_steps: int | None = None, batch_size: int | None = None) -> None:
        self.keys, self.title, self.every_s = keys, title, every_s
        self.history: list[dict[str, Any]] = [dict(r) for r in history or ()]
        self.total_steps, self.batch_size = total_steps, batch_size
        self._eta_said = False
        self._handle: Any = None
        self._last = -1e9

    def eta(self, record: dict[str, Any]) -> str | None:
        """"measured N images/s; about M min to go" from a logged record (None if unknown)."""
        ips, step = record.get("imgs_per_s"), record.get("step")
        if not (self.total_steps and self.batch_size and ips and step):
            return None
        left = (self.total_steps - step) * self.batch_size / ips / 60.0
        return (f"measured {ips:.0f} images/s on this machine; about {left:.1f} min to go "
                f"(step {step} of {self.total_steps})")

    def __call__(self, record: dict[str, Any]) -> None:
        import time

        self.history.append(dict(record))
        # the first record covers step 1 only (start-up); the second is a full window
        if not self._eta_said and len(self.history) >= 2 and (line := self.eta(record)):
            print(line)
            self._eta_said = True
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.draw()

    def figure(self) -> Any:
        from radjepa_lab.viz import plot_training_curves

        return plot_training_curves(self.history, self.keys, title=self.title)

    def draw(self) -> None:
        """Show (or replace) the live figure; a no-op outside IPython."""
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover
            return
        if get_ipython() is None or not self.history:
            return
        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)


# ----------------------------------------------------------------------------- result sentences


class ClaimFailed(AssertionError):
    """A sentence a notebook states about its results does not hold for this run's numbers."""


def claim(holds: bool, sentence: str) -> None:
    """State one result of this run in words, checked against the numbers just computed.

    The notebooks' text draws its conclusions through this call: it prints the sentence with a
    tick when the computed values bear it out, and raises :class:`ClaimFailed` when they do
    not, so ``make test`` (nbmake) fails instead of a notebook saying something its own
    outputs contradict. Claims about *your* run are printed as verdicts instead, because a
    short run may honestly learn nothing.
    """
    if not holds:
        raise ClaimFailed(f"the notebook's text says: {sentence!r}, but this run's numbers "
                          "do not bear it out")
    print(f"\u2714 {sentence}")
