"""Thin ipywidgets wrappers for exploration in notebooks.

Each widget only collects slider/dropdown values and calls a plain function from ``viz`` or
``analysis`` that notebooks also call directly (that direct call is what the notebook tests
check). ipywidgets callbacks normally swallow exceptions; :func:`render_into` puts the
traceback into the widget's output area instead, so a student sees what went wrong.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "attention_widget",
    "latent_widget",
    "mask_widget",
    "render_into",
    "umap_widget",
]


# full slider labels: ipywidgets truncates descriptions to ~80 px by default ("target asp...")
LABEL = {"description_width": "initial"}


def _figure_output(fig: Any) -> dict[str, Any]:
    """A matplotlib figure as one notebook display_data output (PNG + text)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                     "text/plain": repr(fig)}}


def render_into(out: Any, make_figure: Callable[[], Any]) -> Any:
    """Build a figure (or tuple of figures) and make it the whole content of ``out`` (an
    ``ipywidgets.Output``), in ONE widget-state update.

    Setting ``out.outputs`` replaces the old pictures atomically. The usual
    ``clear_output(wait=True)`` plus ``display()`` inside ``with out:`` routes every figure
    through the kernel's output capture, and with two figures that capture intermittently
    left headless clients (nbmake) waiting on an idle kernel. Any exception becomes the
    traceback text in ``out`` and is returned instead of raised, because ipywidgets would
    otherwise hide it in the browser console.
    """
    try:
        figs = make_figure()
        items = [_figure_output(f) for f in (figs if isinstance(figs, tuple | list) else (figs,))]
        result: Any = figs
    except Exception as e:  # noqa: BLE001 - shown to the user, never swallowed silently
        text = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        items = [{"output_type": "stream", "name": "stderr", "text": text}]
        result = e
    out.outputs = tuple(items)
    return result


_render = render_into


def mask_widget(image: np.ndarray, patch_size: int = 8, synthetic: bool = True) -> Any:
    """Sliders for target scale, aspect, number of targets, context scale and seed.

    Calls :func:`radjepa_lab.viz.plot_sampled_masks` with a ``masks.MaskConfig`` built from the
    sliders.
    """
    import ipywidgets as w

    from radjepa_lab.masks import MaskConfig
    from radjepa_lab.viz.images import plot_sampled_masks

    d = MaskConfig()
    pred = w.FloatRangeSlider(value=d.pred_scale, min=0.02, max=0.5, step=0.01,
                              description="target scale", style=LABEL)
    asp = w.FloatRangeSlider(value=d.pred_aspect, min=0.3, max=3.0, step=0.05,
                             description="target aspect", style=LABEL)
    enc = w.FloatRangeSlider(value=d.enc_scale, min=0.3, max=1.0, step=0.01,
                             description="context scale", style=LABEL)
    n_t = w.IntSlider(value=d.n_targets, min=1, max=6, description="targets", style=LABEL)
    seed = w.IntSlider(value=0, min=0, max=99, description="seed", style=LABEL)
    out = w.Output()

    def update(*_: Any) -> None:
        cfg = MaskConfig(
            enc_scale=tuple(enc.value), pred_scale=tuple(pred.value),
            pred_aspect=tuple(asp.value), n_targets=n_t.value,
        )
        _render(out, lambda: plot_sampled_masks(image, cfg, seed.value, patch_size, synthetic))

    for s in (pred, asp, enc, n_t, seed):
        s.observe(update, names="value")
    update()
    return w.VBox([w.HBox([pred, asp]), w.HBox([enc, n_t, seed]), out])


def attention_widget(encoder: Any, image: np.ndarray, synthetic: bool = True) -> Any:
    """Patch picker (row, column) and layer selector for attention maps and rollout.

    Calls :func:`analysis.attention.attention_maps` once, then
    :func:`viz.plot_attention_heads` and :func:`viz.plot_rollout` for the picked patch.
    """
    import ipywidgets as w

    from radjepa_lab.analysis.attention import attention_maps
    from radjepa_lab.viz.images import plot_attention_heads, plot_rollout

    res = attention_maps(encoder, image)
    gh, gw = res.grid
    row = w.IntSlider(value=gh // 2, min=0, max=gh - 1, description="patch row", style=LABEL)
    col = w.IntSlider(value=gw // 3, min=0, max=gw - 1, description="patch col", style=LABEL)
    layer = w.Dropdown(options=["all"] + list(range(res.n_layers)), value="all",
                       description="layer", style=LABEL)
    out = w.Output()

    def update(*_: Any) -> None:
        q = (row.value, col.value)
        layers = None if layer.value == "all" else [layer.value]
        _render(
            out, lambda: (plot_attention_heads(res, q, layers, synthetic), plot_rollout(res, q, synthetic))
        )

    for s in (row, col, layer):
        s.observe(update, names="value")
    update()
    return w.VBox([w.HBox([row, col, layer]), out])


def latent_widget(
    context_encoder: Any, predictor: Any, target_encoder: Any, image: np.ndarray,
    synthetic: bool = True, position_mean: np.ndarray | None = None,
) -> Any:
    """Patch picker for predicted-vs-target latents: predict a 2x2 block at (row, column).

    Calls :func:`analysis.latents.block_masks`, :func:`analysis.latents.predict_latents` and
    :func:`viz.plot_latents`.
    """
    import ipywidgets as w

    from radjepa_lab.analysis.latents import block_masks, predict_latents
    from radjepa_lab.viz.images import plot_latents

    gh, gw = target_encoder.grid_size(*np.asarray(image).shape[-2:])
    size = w.IntSlider(value=2, min=1, max=max(1, min(gh, gw) // 2), description="block size",
                       style=LABEL)
    # the block's top-left corner: every slider position is a distinct, in-grid block (a corner
    # past gh - size would be clamped by block_masks and redraw the same figure)
    row = w.IntSlider(value=(gh - 2) // 2, min=0, max=gh - size.value, description="patch row",
                      style=LABEL)
    col = w.IntSlider(value=(gw - 2) // 3, min=0, max=gw - size.value, description="patch col",
                      style=LABEL)
    out = w.Output()

    def resize(*_: Any) -> None:
        row.max, col.max = gh - size.value, gw - size.value

    size.observe(resize, names="value")

    def make() -> Any:
        ctx, tgt = block_masks((gh, gw), row.value, col.value, (size.value, size.value))
        res = predict_latents(context_encoder, predictor, target_encoder, image, ctx, tgt,
                              position_mean=position_mean)
        return plot_latents(res, synthetic)

    def update(*_: Any) -> None:
        _render(out, make)

    for s in (row, col, size):
        s.observe(update, names="value")
    update()
    return w.VBox([w.HBox([row, col, size]), out])


def umap_widget(
    coords: Any, columns: Mapping[str, Sequence[Any] | np.ndarray], synthetic: bool = True
) -> Any:
    """Colour-by selector for an embedding scatter; calls :func:`viz.plot_embedding`."""
    import ipywidgets as w

    from radjepa_lab.viz.plots import plot_embedding

    names = list(columns)
    pick = w.Dropdown(options=names, value=names[0], description="colour by", style=LABEL)
    out = w.Output()

    def update(*_: Any) -> None:
        _render(out, lambda: plot_embedding(coords, columns[pick.value], pick.value,
                                            synthetic=synthetic))

    pick.observe(update, names="value")
    update()
    return w.VBox([pick, out])
