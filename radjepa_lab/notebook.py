"""Small helpers that every course notebook shares (setup, checkpoint choice, sizes).

They live here, not in the notebooks, so a notebook's first cell is one line and so the
tests can check them. Nothing here trains or analyses: that is the rest of the library.

* :func:`setup` is the first code cell of every notebook: it resolves the profile
  (``RADJEPA_LAB_PROFILE``: ``auto`` -> ``gpu-short`` with CUDA, else ``cpu``; tests set
  ``smoke``), seeds every RNG and prints device, profile and expected run time. The profile
  is the ONLY knob that differs between a classroom and CI.
* :func:`sizes` turns the profile into the sizes of the analysis notebooks (how many
  phantoms, bootstrap resamples, epochs), so heavy work scales with the profile alone.
* :func:`pick_checkpoint` chooses between a fresh run of ``03_pretraining`` and the shipped
  checkpoint, and says which one it uses; :func:`load_jepa` loads all three networks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radjepa_lab.config import Profile, TrainConfig, resolve_profile
from radjepa_lab.errors import CheckpointError
from radjepa_lab.masks import MultiBlockMaskSampler

__all__ = [
    "REPO_ROOT",
    "RUNS_DIR",
    "SHIPPED_CHECKPOINT",
    "BorderBiasedSampler",
    "CheckpointChoice",
    "DicomStep",
    "JEPAModels",
    "LiveCurves",
    "NotebookSizes",
    "XRVStandIn",
    "collapse_summary",
    "dicom_steps",
    "enable_inline_figures",
    "fresh_run_dir",
    "load_jepa",
    "phantom_columns",
    "phantom_images",
    "plot_dicom_steps",
    "plot_intensity_histograms",
    "plot_phantom",
    "pick_checkpoint",
    "seed_everything",
    "setup",
    "sizes",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = REPO_ROOT / "runs" / "notebooks"
SHIPPED_CHECKPOINT = REPO_ROOT / "data" / "checkpoints" / "radjepa_lab_phantom.pt"


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
    seed: int = 0,
    minutes: Mapping[str, float] | None = None,
    name: str | None = None,
    verbose: bool = True,
) -> Profile:
    """First cell of every notebook: resolve the profile, seed, print what will run.

    ``minutes`` maps a preset name (``smoke``, ``cpu``, ``gpu-short``) to this notebook's
    expected run time (measured by ``bench/notebooks.py``); without it the preset's
    pretraining time is shown. ``name`` overrides ``RADJEPA_LAB_PROFILE`` (rarely needed).
    """
    profile = resolve_profile(name)
    seed_everything(seed)
    enable_inline_figures()
    if verbose:
        est = (minutes or {}).get(profile.preset)
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


# ----------------------------------------------------------------------------- sizes


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


_SIZES = {
    "smoke": NotebookSizes(160, 96, 128, 16, 200, 4, 20, 8, "umap"),
    "cpu": NotebookSizes(1500, 500, 800, 64, 1000, 30, 100, 32, "umap"),
    "gpu-short": NotebookSizes(3000, 1000, 1500, 128, 1000, 40, 200, 64, "umap"),
    "radjepa-b14": NotebookSizes(3000, 1000, 1500, 128, 1000, 40, 200, 64, "umap"),
}


def sizes(profile: Profile) -> NotebookSizes:
    """Experiment sizes for ``profile`` (the one knob; see :class:`NotebookSizes`)."""
    return _SIZES.get(profile.preset, _SIZES["cpu"])


# ----------------------------------------------------------------------------- checkpoints


def fresh_run_dir(profile: Profile) -> Path:
    """Where ``03_pretraining`` writes its run for this profile (``runs/`` is git-ignored).

    One folder per preset, so a tiny smoke run left behind by ``make test`` is never
    mistaken for a classroom ``cpu`` run.
    """
    return RUNS_DIR / profile.preset


@dataclass
class CheckpointChoice:
    """Which checkpoint a notebook analyses, and why."""

    path: Path
    source: str  # "fresh" (03_pretraining) or "shipped" (data/checkpoints)
    step: int
    config: TrainConfig
    note: str = ""

    def describe(self) -> str:
        m = self.config.model
        try:
            shown = self.path.relative_to(REPO_ROOT)
        except ValueError:
            shown = self.path
        what = (
            "fresh run from 03_pretraining" if self.source == "fresh" else "shipped checkpoint"
        )
        return (
            f"using the {what}: {shown} (step {self.step}, ViT d{m.embed_dim}x{m.depth} "
            f"p{m.patch_size} @{m.img_size}px){' - ' + self.note if self.note else ''}"
        )


def _read_choice(path: Path, source: str, note: str = "") -> CheckpointChoice:
    from radjepa_lab.config import config_from_dict
    from radjepa_lab.train import load_checkpoint

    state = load_checkpoint(path)
    return CheckpointChoice(path, source, int(state.get("step", 0)),
                            config_from_dict(state["config"]), note)


def pick_checkpoint(
    profile: Profile | None = None,
    prefer_fresh: bool = True,
    shipped: Path | None = None,
    verbose: bool = True,
) -> CheckpointChoice:
    """The fresh ``03_pretraining`` run for this profile when it exists, else the shipped one.

    Raises CheckpointError (saying how to fix it) when neither exists or a file is unreadable.
    """
    profile = profile or resolve_profile()
    shipped = SHIPPED_CHECKPOINT if shipped is None else Path(shipped)
    fresh = fresh_run_dir(profile) / "checkpoint.pt"
    choice = None
    if prefer_fresh and fresh.is_file():
        try:
            choice = _read_choice(fresh, "fresh")
        except CheckpointError as e:
            if not shipped.is_file():
                raise
            note = f"the fresh run {fresh} is unreadable ({e}); re-run 03_pretraining"
            choice = _read_choice(shipped, "shipped", note)
    elif shipped.is_file():
        choice = _read_choice(shipped, "shipped", "run 03_pretraining to analyse your own run")
    if choice is None:
        raise CheckpointError(
            f"No checkpoint to analyse: neither {fresh} (run notebooks/03_pretraining.ipynb) "
            f"nor the shipped {shipped} (restore it with `git checkout -- {shipped.name}` or "
            "see data/README.md) exists."
        )
    if verbose:
        print(choice.describe())
    return choice


@dataclass
class JEPAModels:
    """The three I-JEPA networks of one checkpoint, on CPU in eval mode."""

    encoder: torch.nn.Module  # context encoder (gets gradients during training)
    predictor: torch.nn.Module
    target_encoder: torch.nn.Module  # EMA copy; the I-JEPA evaluation convention
    config: TrainConfig
    info: dict[str, Any] = field(default_factory=dict)


def load_jepa(path: str | Path | CheckpointChoice) -> JEPAModels:
    """Load context encoder, predictor and EMA target encoder of a kit checkpoint."""
    from radjepa_lab.config import config_from_dict
    from radjepa_lab.models import build_encoder, build_predictor
    from radjepa_lab.train import load_checkpoint

    path = path.path if isinstance(path, CheckpointChoice) else Path(path)
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    nets = {}
    # exported checkpoints (train.export_checkpoint, e.g. the shipped one) keep only the EMA
    # target encoder; it then also serves as the context encoder
    context_from_target = "encoder" not in state and "exported" in state
    for key, build in (("encoder", build_encoder), ("target_encoder", build_encoder),
                       ("predictor", build_predictor)):
        net = build(cfg.model)
        src = "target_encoder" if key == "encoder" and context_from_target else key
        try:
            net.load_state_dict(state[src])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: bad {key!r} weights ({e}); re-run training.") from e
        nets[key] = net.eval()
    return JEPAModels(nets["encoder"], nets["predictor"], nets["target_encoder"], cfg,
                      {"path": str(path), "step": int(state.get("step", 0)),
                       "context_from_target": context_from_target})


# ----------------------------------------------------------------------------- teaching aids


class BorderBiasedSampler(MultiBlockMaskSampler):
    """The reference I-JEPA block placement, kept ONLY to show its bias in 01_masking_sampler.

    facebookresearch/ijepa draws a corner with ``torch.randint(0, H - h)``: one position
    short, so no block ever touches the last row or column (ijepa #60, #40). The kit's
    :meth:`MultiBlockMaskSampler.place` draws from ``H - h + 1`` positions instead.
    """

    def place(self, h: torch.Tensor, w: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        gh, gw = self.grid
        u = torch.rand(2, *h.shape, generator=generator, dtype=torch.float64)
        top = torch.floor(u[0] * (gh - h).clamp_min(1)).long()  # range(gh - h): bias
        left = torch.floor(u[1] * (gw - w).clamp_min(1)).long()
        return torch.stack([top, left, h, w], dim=-1)


class LiveCurves:
    """A ``pretrain`` callback that redraws the training curves in place while it runs.

    In Jupyter it updates one display area (at most every ``every_s`` seconds, so drawing
    never dominates a fast run); elsewhere it only collects the records. Pass ``history``
    (e.g. of a first session) to continue its curves after ``resume=True``.
    """

    def __init__(self, keys: tuple[str, ...] = ("loss", "lr", "momentum", "rankme", "feat_std"),
                 title: str = "Pretraining (live)", every_s: float = 3.0,
                 history: list[dict[str, Any]] | None = None) -> None:
        self.keys, self.title, self.every_s = keys, title, every_s
        self.history: list[dict[str, Any]] = [dict(r) for r in history or ()]
        self._handle: Any = None
        self._last = -1e9

    def __call__(self, record: dict[str, Any]) -> None:
        import time

        self.history.append(dict(record))
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


def collapse_summary(history: list[dict[str, Any]], dim: int | None = None) -> str:
    """Plain-language collapse diagnosis from logged ``rankme`` / ``feat_std`` records.

    Rules (Garrido et al. 2023; the kit's research notes): RankMe that ends below its first
    logged value, or a feature std far below ``1/sqrt(D)``, signals (partial) collapse.
    """
    logged = [r for r in history if r.get("rankme") is not None]
    ranks = [r["rankme"] for r in logged]
    stds = [(r["feat_std"], r.get("feat_std_ref")) for r in history if r.get("feat_std")]
    if not ranks:
        return "no RankMe logged: cannot diagnose collapse."
    lines = [f"RankMe {ranks[0]:.1f} -> {ranks[-1]:.1f} (first -> last log)"]
    verdict = "healthy: RankMe ended at or above its first value"
    if ranks[-1] < ranks[0]:
        verdict = "WARNING: RankMe fell during training, the signature of (partial) collapse"
    from radjepa_lab.train import MONITOR_TOP_K, TAIL_KEY, rankme_dipped

    low = min(range(len(ranks)), key=ranks.__getitem__)
    if rankme_dipped(ranks[0], ranks[low]):
        lines.append(f"dipped to {ranks[low]:.1f}")

        t0, t_low = logged[0].get(TAIL_KEY), logged[low].get(TAIL_KEY)
        if t0 is not None and t_low is not None:
            # a dip with a steady tail is a few learned directions growing, not lost dimensions
            kind = (f"only the {MONITOR_TOP_K} leading directions grew" if t_low >= 0.95 * t0
                    else "dimensions were lost")
            lines.append(f"RankMe without the {MONITOR_TOP_K} leading directions {t0:.1f} -> "
                         f"{t_low:.1f} at the dip: {kind}")
    if stds:
        s, ref = stds[-1]
        ref = ref or (1.0 / math.sqrt(dim) if dim else None)
        if ref:
            lines.append(f"feature std {s:.3f} vs healthy ~1/sqrt(D) = {ref:.3f}")
            if s < 0.25 * ref:
                verdict = "WARNING: features are nearly constant across images (collapse)"
    return " | ".join(lines) + f" -> {verdict}"


def phantom_columns(batch: Any) -> dict[str, np.ndarray]:
    """Colour-by columns for embedding maps: each finding, then phantom metadata.

    ``batch`` is a ``data.phantom.PhantomBatch``. Metadata columns (pose, inspiration,
    exposure, the random side marker) are nuisance: a good embedding should NOT be organised
    by them.
    """
    from radjepa_lab.data.phantom import FINDINGS

    meta = batch.meta
    cols: dict[str, np.ndarray] = {f: batch.labels[:, j].astype(int) for j, f in enumerate(FINDINGS)}
    cols["number of findings"] = batch.labels.sum(1).astype(int)
    nan = float("nan")
    cols["cardiothoracic ratio"] = np.array([m.get("ctr", nan) for m in meta], float)
    cols["effusion side"] = np.array([m.get("effusion_side", "none") for m in meta])
    cols["rotation (deg)"] = np.array([m.get("rotation_deg", nan) for m in meta], float)
    cols["inspiration"] = np.array([m.get("inspiration", nan) for m in meta], float)
    cols["exposure gain"] = np.array([m.get("exposure", {}).get("gain", nan) for m in meta],
                                     float)
    cols["side marker letter"] = np.array([m.get("marker", "none") for m in meta])
    return cols


# ----------------------------------------------------------------------------- 00_data_tour


@dataclass
class DicomStep:
    """One stage of DICOM display processing, for the step-by-step figure."""

    title: str
    image: np.ndarray
    note: str


def dicom_steps(path: str | Path, every: int = 4) -> list[DicomStep]:
    """The stages :func:`radjepa_lab.data.dicom.read_dicom` runs, kept apart for teaching.

    Stored values -> Modality LUT -> VOI LUT -> MONOCHROME1 inversion (pydicom's own
    ``apply_modality_lut`` / ``apply_voi_lut``). Images are subsampled by ``every`` for display
    only; the last stage is ``read_dicom``'s own output, so the figure shows the kit's result.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from radjepa_lab.data.dicom import read_dicom

    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    bits = int(ds.get("BitsStored", 16))
    steps = [DicomStep("1. stored values", raw[::every, ::every].astype(np.float64),
                       f"{raw.dtype}, {bits} bits stored, range {raw.min()}..{raw.max()}")]
    mod = np.asarray(apply_modality_lut(raw, ds), np.float64)
    has_rescale = "RescaleSlope" in ds or "ModalityLUTSequence" in ds
    steps.append(DicomStep(
        "2. Modality LUT", mod[::every, ::every],
        (f"slope {ds.get('RescaleSlope', 1)}, intercept {ds.get('RescaleIntercept', 0)}"
         if has_rescale else "no Rescale/LUT in the header: identity")))
    voi = np.asarray(apply_voi_lut(mod, ds, index=0), np.float64)
    if "VOILUTSequence" in ds:
        how = "VOI LUT Sequence"
    elif "WindowCenter" in ds:
        how = f"window centre {ds.WindowCenter}, width {ds.WindowWidth}"
    else:
        how = "no VOI in the header: kit stretches min..max"
    steps.append(DicomStep("3. VOI LUT", voi[::every, ::every], how))
    img, meta = read_dicom(path)
    pi = meta.photometric_interpretation
    steps.append(DicomStep(
        "4. kit output (read_dicom)", img[::every, ::every],
        f"{pi}: {'inverted so air is dark' if meta.inverted else 'not inverted'}; [0, 1]"))
    return steps


def plot_dicom_steps(steps: list[DicomStep], title: str = "DICOM display pipeline") -> Any:
    """Each stage in grayscale with its own colourbar (values in that stage's units)."""
    from radjepa_lab.viz.images import new_figure, show_xray

    fig, axes = new_figure(1, len(steps), (3.3, 3.6))
    for ax, st in zip(axes[0], steps, strict=True):
        if st.title.startswith("4."):
            im = show_xray(ax, st.image)
        else:
            im = ax.imshow(st.image, cmap="gray", origin="upper")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("patient right \u2190 \u2192 patient left", fontsize=7)
        fig.colorbar(im, ax=ax, shrink=0.75, label="pixel value")
        ax.set_title(f"{st.title}\n{st.note}", fontsize=7)
    fig.suptitle(title)
    return fig


def plot_phantom(phantom: Any, title: str = "Phantom") -> Any:
    """Image, anatomy masks and the report of one phantom, side by side (SYNTHETIC)."""
    import textwrap

    from radjepa_lab.viz.images import new_figure, show_xray, titled

    fig, axes = new_figure(1, 3, (3.4, 3.6))
    show_xray(axes[0, 0], phantom.image, "image")
    show_xray(axes[0, 1], phantom.image, "anatomy masks")
    colours = {"right_lung": "#377eb8", "left_lung": "#4daf4a", "heart": "#e41a1c",
               "ribs": "#ff7f00"}
    for name, mask in phantom.masks.items():
        axes[0, 1].contour(np.asarray(mask, float), levels=[0.5], linewidths=0.9,
                           colors=colours.get(name, "white"))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours.get(n, "white"), label=n) for n in phantom.masks]
    axes[0, 1].legend(handles=handles, fontsize=6, loc="lower center",
                      bbox_to_anchor=(0.5, -0.32), ncol=2)
    ax = axes[0, 2]
    ax.set_axis_off()
    found = [k for k, v in phantom.labels.items() if v] or ["none"]
    text = "\n".join(textwrap.wrap(phantom.report, 46))
    ax.text(0, 1, f"labels: {', '.join(found)}\n\n{text}", va="top", ha="left", fontsize=7,
            family="monospace", transform=ax.transAxes)
    ax.set_title("report", fontsize=9)
    fig.suptitle(titled(title, True))
    return fig


class XRVStandIn:
    """A stand-in with torchxrayvision's dataset interface, for the demo when xrv is absent.

    torchxrayvision datasets yield ``{"img": float [1, H, W] in [-1024, 1024], "lab": ...}``
    and expose ``.pathologies`` and ``.labels``; this wraps [0, 1] images the same way.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, pathologies: list[str]) -> None:
        self.images = np.asarray(images, np.float32)
        self.labels = np.asarray(labels, np.float32)
        self.pathologies = list(pathologies)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        img = self.images[idx][None] * 2048.0 - 1024.0  # xrv.datasets.normalize's range
        return {"img": img, "lab": self.labels[idx], "idx": idx}


def plot_intensity_histograms(images: Mapping[str, np.ndarray], title: str = "Intensities",
                              bins: int = 64) -> Any:
    """One histogram per image (fraction of pixels), to compare intensity ranges."""
    from radjepa_lab.viz.images import new_figure

    fig, axes = new_figure(1, len(images), (3.2, 2.8))
    for ax, (name, img) in zip(axes[0], images.items(), strict=True):
        v = np.asarray(img, np.float64).ravel()
        ax.hist(v, bins=bins, weights=np.full(v.size, 1.0 / v.size), color="0.3")
        ax.set_title(f"{name}\nrange [{v.min():.3g}, {v.max():.3g}]", fontsize=8)
        ax.set_xlabel("pixel value")
        ax.set_ylabel("fraction of pixels")
    fig.suptitle(title)
    return fig


def _stack_images(items: list[dict[str, Any]]) -> np.ndarray:
    return np.stack([it["img"][0].numpy() for it in items])


def phantom_images(n: int, seed: int, size: int, num_workers: int = 0) -> np.ndarray:
    """``[n, size, size]`` float32 phantoms, identical to ``PhantomDataset(n, seed, ...)``.

    Generated once (in ``num_workers`` processes when > 0) so that a notebook that trains in
    two sessions (``max_steps`` then ``resume=True``) does not render the dataset twice.
    """
    from torch.utils.data import DataLoader

    from radjepa_lab.data.phantom import PhantomConfig, PhantomDataset

    ds = PhantomDataset(n, seed=seed, cfg=PhantomConfig(size=size))
    loader = DataLoader(ds, batch_size=64, num_workers=num_workers, collate_fn=_stack_images)
    return np.concatenate(list(loader)) if n else np.zeros((0, size, size), np.float32)
