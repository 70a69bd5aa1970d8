"""Image-space figures: X-rays, masks, latents, attention, segmentation and attributions.

Every function takes arrays or an ``analysis`` result and returns a ``matplotlib.figure.Figure``
built without pyplot (no global state, no double display in notebooks, works headless).
X-rays are drawn in grayscale, ``origin="upper"``, in radiological orientation: the patient's
right is on the image's left, marked with an "R". Pass ``synthetic=True`` for phantom images:
the title then says SYNTHETIC so no figure can be mistaken for a real patient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radjepa_lab.analysis.attention import (
    AttentionResult,
    attention_received,
    query_attention,
    rollout_map,
    upsample_map,
)

__all__ = [
    "TARGET_COLOURS",
    "new_figure",
    "overlay",
    "plot_attention_heads",
    "plot_attributions",
    "plot_coverage",
    "plot_images",
    "plot_latents",
    "plot_maps_side_by_side",
    "plot_mask_overlay",
    "plot_nn_crops",
    "plot_overlay",
    "plot_rollout",
    "plot_sampled_masks",
    "plot_segmentation",
    "show_xray",
    "titled",
]

TARGET_COLOURS = ("#e41a1c", "#ff7f00", "#4daf4a", "#984ea3", "#a65628", "#f781bf")
CONTEXT_COLOUR = "#377eb8"


def titled(title: str, synthetic: bool) -> str:
    """Prefix ``SYNTHETIC`` to titles of phantom figures."""
    return f"SYNTHETIC — {title}" if synthetic else title


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (3.2, 3.2), **kw: Any):
    """A pyplot-free Figure and its axes array (always 2-D)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def show_xray(ax, image: np.ndarray, title: str | None = None, mark_side: bool = True):
    """Draw an X-ray in [0, 1] on ``ax`` (gray, origin upper, 'R' on the image's left)."""
    im = ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=1, origin="upper")
    if mark_side:
        ax.text(
            0.03, 0.97, "R", transform=ax.transAxes, color="yellow", fontsize=9,
            fontweight="bold", va="top", ha="left",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("patient right ← → patient left", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return im


def label_patch_grid(ax) -> None:
    """Axis labels and whole-number ticks for a map drawn on the patch grid (no "2.5" patches)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def overlay(ax, image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet",
            vmin: float | None = None, vmax: float | None = None):
    """Overlay a heat map (any size; upsampled to the image) on an X-ray; returns the heat image."""
    image = np.asarray(image)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != image.shape:
        heat = upsample_map(heat, image.shape)
    show_xray(ax, image)
    return ax.imshow(heat, cmap=cmap, alpha=alpha, origin="upper", vmin=vmin, vmax=vmax)


def plot_images(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    title: str = "Images",
    synthetic: bool = False,
):
    """A grid of X-rays ``[N, H, W]`` with optional per-image titles."""
    images = np.asarray(images)
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = new_figure(nrows, min(ncols, n), (2.4, 2.6))
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_xray(ax, images[i], titles[i] if titles else None)
        else:
            ax.set_axis_off()
    fig.suptitle(titled(title, synthetic))
    return fig


def _patch_rect(ax, idx: int, grid: tuple[int, int], patch: int, colour: str, alpha: float):
    from matplotlib.patches import Rectangle

    r, c = divmod(int(idx), grid[1])
    ax.add_patch(
        Rectangle((c * patch - 0.5, r * patch - 0.5), patch, patch, facecolor=colour, alpha=alpha,
                  edgecolor="none")
    )


def _draw_masks(ax, context_idx, target_idx, grid, patch):
    from matplotlib.patches import Rectangle

    for i in np.asarray(context_idx).ravel():
        _patch_rect(ax, i, grid, patch, CONTEXT_COLOUR, 0.25)
    for m, block in enumerate(np.atleast_2d(np.asarray(target_idx))):
        colour = TARGET_COLOURS[m % len(TARGET_COLOURS)]
        for i in block:
            _patch_rect(ax, i, grid, patch, colour, 0.3)
        # each block's outline, inset by its number, so overlapping blocks stay visible
        rows, cols = np.divmod(np.asarray(block), grid[1])
        inset = 0.6 + 1.2 * m * patch / 16
        x0, y0 = cols.min() * patch - 0.5 + inset, rows.min() * patch - 0.5 + inset
        w = (cols.max() - cols.min() + 1) * patch - 2 * inset
        h = (rows.max() - rows.min() + 1) * patch - 2 * inset
        ax.add_patch(Rectangle((x0, y0), w, h, fill=False, edgecolor=colour, linewidth=1.6))
        ax.text(x0 + 0.5, y0 + 0.5, str(m), color=colour, fontsize=7, va="top", ha="left",
                fontweight="bold")


def plot_mask_overlay(
    image: np.ndarray,
    context_idx: np.ndarray,
    target_idx: np.ndarray,
    patch_size: int,
    title: str = "I-JEPA masks",
    synthetic: bool = False,
):
    """Image with the context (blue) and each target block (its own colour) drawn on it.

    Also shows the same masks as a patch-grid map, where overlaps between targets and the
    context would be visible (there should be none).
    """
    from matplotlib.patches import Patch

    image = np.asarray(image)
    grid = (image.shape[0] // patch_size, image.shape[1] // patch_size)
    fig, axes = new_figure(1, 2, (3.4, 3.4))
    show_xray(axes[0, 0], image, "context (blue) and targets")
    _draw_masks(axes[0, 0], context_idx, target_idx, grid, patch_size)
    lab = np.zeros(grid[0] * grid[1])
    lab[np.asarray(context_idx).ravel()] = 1
    tgt = np.atleast_2d(np.asarray(target_idx))
    for m, block in enumerate(tgt):
        lab[block] = 2 + m
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#dddddd", CONTEXT_COLOUR, *TARGET_COLOURS[: len(tgt)]])
    axes[0, 1].imshow(lab.reshape(grid), cmap=cmap, vmin=-0.5, vmax=len(tgt) + 1.5, origin="upper")
    axes[0, 1].set_title(f"patch grid {grid[0]}x{grid[1]}", fontsize=9)
    label_patch_grid(axes[0, 1])
    handles = [Patch(color="#dddddd", label="dropped"), Patch(color=CONTEXT_COLOUR, label="context")]
    handles += [Patch(color=TARGET_COLOURS[m % 6], label=f"target {m}") for m in range(len(tgt))]
    axes[0, 1].legend(handles=handles, fontsize=6, loc="upper right", bbox_to_anchor=(1.45, 1))
    n_ctx = np.asarray(context_idx).size
    fig.suptitle(titled(f"{title}: {n_ctx} context patches, {len(tgt)} targets", synthetic))
    return fig


def plot_sampled_masks(
    image: np.ndarray,
    mask_cfg: Any = None,
    seed: int = 0,
    patch_size: int = 8,
    synthetic: bool = False,
):
    """Draw one sample of the multi-block sampler on ``image`` (what the mask widget shows)."""
    import torch

    from radjepa_lab.masks import MaskConfig, MultiBlockMaskSampler

    image = np.asarray(image)
    grid = (image.shape[0] // patch_size, image.shape[1] // patch_size)
    sampler = MultiBlockMaskSampler(grid, mask_cfg or MaskConfig())
    mb = sampler.sample(1, torch.Generator().manual_seed(seed))
    return plot_mask_overlay(
        image, mb.context[0].numpy(), mb.targets[:, 0].numpy(), patch_size,
        title=f"masks (seed {seed})", synthetic=synthetic,
    )


def plot_coverage(heatmap: np.ndarray, title: str = "How often each patch is a target",
                  label: str = "fraction of samples", vmin: float | None = None,
                  vmax: float | None = None):
    """Heat map over the patch grid (e.g. mask coverage), with a colourbar. Pass the same
    ``vmin``/``vmax`` to maps that are meant to be compared, so equal colours mean equal values."""
    fig, axes = new_figure(1, 1, (4.2, 3.6))
    ax = axes[0, 0]
    im = ax.imshow(np.asarray(heatmap), cmap="viridis", origin="upper", vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, label=label)
    label_patch_grid(ax)
    ax.set_title(title)
    return fig


def plot_latents(res: Any, synthetic: bool = False):
    """Predicted vs target latents (an ``analysis.latents.LatentResult``) in four panels."""
    fig, axes = new_figure(1, 4, (3.0, 3.2))
    ax = axes[0]
    show_xray(ax[0], res.image, "image + masks")
    _draw_masks(ax[0], res.context_idx, res.target_idx, res.grid, res.patch_size)
    # the colour scale spans the values actually present (a fixed [-1, 1] scale paints
    # cosines of 0.90 and 0.95 the same green); the colourbar says where they lie
    centred = res.centered_cosine is not None
    cmap_vals = res.cosine_map
    if centred:
        cmap_vals = np.full(res.grid[0] * res.grid[1], np.nan)
        flat_idx, flat_cos = res.target_idx.reshape(-1), res.centered_cosine.reshape(-1)
        for i in np.unique(flat_idx):
            cmap_vals[i] = flat_cos[flat_idx == i].mean()
        cmap_vals = cmap_vals.reshape(res.grid)
    finite = cmap_vals[np.isfinite(cmap_vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    if hi - lo < 0.05:
        lo, hi = lo - 0.025, hi + 0.025
    im = ax[1].imshow(cmap_vals, cmap="viridis", vmin=lo, vmax=hi, origin="upper")
    what = "centred cosine" if centred else "cosine(predicted, target)"
    fig.colorbar(im, ax=ax[1], label=what, shrink=0.8)
    mean = res.mean_centered_cosine if centred else res.mean_cosine
    ax[1].set_title(f"{what} per target patch\n(mean {mean:.2f})", fontsize=9)
    for a in ax[1:]:
        label_patch_grid(a)
    part = "minus position mean, " if res.centered else ""
    ax[2].imshow(res.rgb_target, origin="upper")
    ax[2].set_title(f"target latents\n({part}PCA→RGB)", fontsize=9)
    pred = np.where(np.isnan(res.rgb_predicted), 0.5, res.rgb_predicted)
    ax[3].imshow(pred, origin="upper")
    ax[3].set_title("predicted latents\n(same PCA basis)", fontsize=9)
    fig.suptitle(titled("Predicted vs target latents", synthetic))
    return fig


def plot_nn_crops(nn: Any, synthetic: bool = False, title: str = "Nearest real patches"):
    """Each predicted latent's nearest real patches (``analysis.latents.NNCrops``) as crops."""
    q, k = nn.crops.shape[:2]
    extra = 1 if nn.true_crops is not None else 0
    fig, axes = new_figure(q, k + extra, (1.4, 1.5))
    for i in range(q):
        if extra:
            axes[i, 0].imshow(nn.true_crops[i], cmap="gray", vmin=0, vmax=1, origin="upper")
            axes[i, 0].set_title("true patch" if i == 0 else "", fontsize=7)
        for j in range(k):
            a = axes[i, j + extra]
            a.imshow(nn.crops[i, j], cmap="gray", vmin=0, vmax=1, origin="upper")
            a.set_title(f"cos {nn.similarity[i, j]:.2f}", fontsize=7)
        for a in axes[i]:
            a.set_xticks([])
            a.set_yticks([])
        axes[i, 0].set_ylabel(f"pred {i}", fontsize=7)
    fig.suptitle(titled(title, synthetic), fontsize=9)
    return fig


def plot_attention_heads(
    res: AttentionResult,
    query: int | tuple[int, int],
    layers: Sequence[int] | None = None,
    synthetic: bool = False,
):
    """Where one query patch looks: a layers x heads grid of attention maps on the X-ray."""
    maps = query_attention(res, query)
    layers = list(range(res.n_layers)) if layers is None else list(layers)
    q = query if isinstance(query, tuple | list) else divmod(int(query), res.grid[1])
    fig, axes = new_figure(len(layers), res.n_heads, (2.2, 2.3))
    ps = res.image.shape[0] / res.grid[0]
    for i, layer in enumerate(layers):
        top = float(maps[layer].max())  # one scale per row, so the row's colourbar is true
        for h in range(res.n_heads):
            ax = axes[i, h]
            im = overlay(ax, res.image, maps[layer, h], alpha=0.55, vmin=0, vmax=top)
            ax.plot((q[1] + 0.5) * ps - 0.5, (q[0] + 0.5) * ps - 0.5, marker="x", color="white")
            ax.set_title(f"layer {layer} head {h}", fontsize=7)
            ax.set_xlabel("")
        fig.colorbar(im, ax=axes[i, -1], shrink=0.7, label="attention")
    fig.suptitle(titled(f"Attention of patch {tuple(q)} per layer and head", synthetic))
    return fig


def plot_rollout(
    res: AttentionResult, query: int | tuple[int, int] | None = None, synthetic: bool = False
):
    """Image, attention rollout (query patch or average) and last-layer attention received."""
    fig, axes = new_figure(1, 3, (3.2, 3.3))
    show_xray(axes[0, 0], res.image, "image")
    r = rollout_map(res, query)
    im = overlay(axes[0, 1], res.image, r, alpha=0.55)
    fig.colorbar(im, ax=axes[0, 1], shrink=0.8, label="rollout weight")
    name = "averaged over patches" if query is None else f"from patch {query}"
    axes[0, 1].set_title(f"rollout {name}", fontsize=9)
    rec = attention_received(res)[-1]
    im2 = overlay(axes[0, 2], res.image, rec, alpha=0.55)
    fig.colorbar(im2, ax=axes[0, 2], shrink=0.8, label="mean attention received")
    axes[0, 2].set_title("attention received (last layer)", fontsize=9)
    fig.suptitle(titled("Attention rollout (no CLS token)", synthetic))
    return fig


def plot_maps_side_by_side(image: np.ndarray, maps: Mapping[str, np.ndarray], title: str = "",
                           label: str = "", synthetic: bool = False, cmap: str = "jet"):
    """The X-ray, then one heat map per model over it (e.g. each objective's attention
    rollout on the same image), each with its colourbar."""
    fig, axes = new_figure(1, 1 + len(maps), (3.0, 3.2))
    show_xray(axes[0, 0], image, "image")
    for ax, (name, heat) in zip(axes[0, 1:], maps.items(), strict=True):
        im = overlay(ax, image, heat, alpha=0.55, cmap=cmap)
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
        ax.set_title(name, fontsize=9)
    fig.suptitle(titled(title, synthetic))
    return fig


def plot_overlay(image: np.ndarray, heat: np.ndarray, title: str = "", label: str = "",
                 synthetic: bool = False, cmap: str = "jet"):
    """One heat map over one X-ray, with a colourbar."""
    fig, axes = new_figure(1, 1, (4.0, 3.6))
    im = overlay(axes[0, 0], image, heat, cmap=cmap)
    fig.colorbar(im, ax=axes[0, 0], label=label)
    axes[0, 0].set_title(titled(title, synthetic), fontsize=9)
    return fig


def plot_segmentation(
    image: np.ndarray,
    pred: np.ndarray,
    true: np.ndarray,
    names: Sequence[str],
    dice: Mapping[str, float] | None = None,
    synthetic: bool = False,
):
    """Predicted vs true masks ``[S, H, W]`` per structure (contours on the X-ray)."""
    s = len(names)
    fig, axes = new_figure(1, s, (2.6, 2.8))
    for i, n in enumerate(names):
        ax = axes[0, i]
        show_xray(ax, image)
        ax.contour(np.asarray(true[i], float), levels=[0.5], colors="lime", linewidths=1)
        ax.contour(np.asarray(pred[i], float), levels=[0.5], colors="red", linewidths=1,
                   linestyles="--")
        d = f" Dice {dice[n]:.2f}" if dice and n in dice else ""
        ax.set_title(f"{n}{d}", fontsize=8)
    fig.suptitle(titled("Linear segmentation probe: true (green) vs predicted (red dashed)",
                        synthetic), fontsize=9)
    return fig


def plot_attributions(
    image: np.ndarray, maps: Mapping[str, np.ndarray], title: str = "Attributions",
    synthetic: bool = False,
):
    """Image and one overlay per attribution map (e.g. IG, Occlusion, Grad-CAM)."""
    fig, axes = new_figure(1, len(maps) + 1, (3.0, 3.2))
    show_xray(axes[0, 0], image, "image")
    for ax, (name, m) in zip(axes[0, 1:], maps.items(), strict=True):
        m = np.asarray(m, dtype=np.float32)
        lim = float(np.abs(m).max()) or 1.0
        signed = m.min() < 0
        im = overlay(ax, image, m, cmap="bwr" if signed else "jet", alpha=0.55,
                     vmin=-lim if signed else 0, vmax=lim)
        fig.colorbar(im, ax=ax, shrink=0.8, label="attribution")
        ax.set_title(name, fontsize=9)
    fig.suptitle(titled(title, synthetic))
    return fig


def plot_dicom_steps(steps: Sequence[Any], title: str = "DICOM display pipeline") -> Any:
    """Each stage in grayscale with its own colourbar (values in that stage's units)."""
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


def plot_intensity_histograms(images: Mapping[str, np.ndarray], title: str = "Intensities",
                              bins: int = 64) -> Any:
    """One histogram per image (fraction of pixels), to compare intensity ranges."""
    fig, axes = new_figure(1, len(images), (3.2, 2.8))
    for ax, (name, img) in zip(axes[0], images.items(), strict=True):
        v = np.asarray(img, np.float64).ravel()
        ax.hist(v, bins=bins, weights=np.full(v.size, 1.0 / v.size), color="0.3")
        ax.set_title(f"{name}\nrange [{v.min():.3g}, {v.max():.3g}]", fontsize=8)
        ax.set_xlabel("pixel value")
        ax.set_ylabel("fraction of pixels")
    fig.suptitle(title)
    return fig
