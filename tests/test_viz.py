"""Figures: every viz function returns a titled Figure with the kit's X-ray conventions."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from radjepa_lab import viz
from radjepa_lab.analysis.attention import AttentionResult
from radjepa_lab.analysis.baselines import FeatureSet, compare_encoders
from radjepa_lab.analysis.embed import Projection
from radjepa_lab.analysis.latents import LatentResult, NNCrops
from radjepa_lab.analysis.metrics import pr_curves
from radjepa_lab.analysis.retrieval import RetrievalResult
from radjepa_lab.data.dicom import DicomStep
from radjepa_lab.data.phantom import PhantomConfig, generate_phantom

RNG = np.random.default_rng(0)
IMG = RNG.random((32, 32)).astype(np.float32)


def _titles(fig: Figure) -> str:
    parts = [fig._suptitle.get_text() if fig._suptitle else ""]
    parts += [ax.get_title() for ax in fig.axes]
    return " ".join(parts)


def _xray_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "gray"]


def _check(fig: Figure, synthetic: bool = True, side_marker: bool = True) -> None:
    assert isinstance(fig, Figure)
    t = _titles(fig)
    assert t.strip(), "figure has no title"
    if synthetic:
        assert "SYNTHETIC" in t
    for ax in _xray_axes(fig):
        assert ax.images[0].origin == "upper"
        if side_marker:  # whole X-rays carry the radiological "R" (patient right = image left)
            assert any(txt.get_text() == "R" for txt in ax.texts)


def _attention() -> AttentionResult:
    a = RNG.random((2, 2, 16, 16))
    a /= a.sum(-1, keepdims=True)
    return AttentionResult(a, (4, 4), IMG)


def test_xray_figures() -> None:
    _check(viz.plot_images(np.stack([IMG, IMG]), ["a", "b"], synthetic=True))
    ctx = np.arange(0, 8)
    tgt = np.array([[10, 11], [14, 15]])
    _check(viz.plot_mask_overlay(IMG, ctx, tgt, patch_size=8, synthetic=True))
    f = viz.plot_coverage(RNG.random((4, 4)))
    assert len(f.axes) == 2  # heat map + colourbar
    res = _attention()
    _check(viz.plot_attention_heads(res, (1, 2), synthetic=True))
    _check(viz.plot_rollout(res, None, synthetic=True))
    _check(viz.plot_overlay(IMG, RNG.random((4, 4)), "heat", synthetic=True))
    masks = RNG.random((2, 32, 32)) > 0.5
    _check(viz.plot_segmentation(IMG, masks, masks, ["a", "b"], {"a": 1.0}, synthetic=True))
    _check(viz.plot_attributions(IMG, {"IG": RNG.normal(size=(32, 32)), "CAM": RNG.random((4, 4))},
                                 synthetic=True))
    assert "SYNTHETIC" not in _titles(viz.plot_images(IMG[None], synthetic=False))


def test_data_figures() -> None:
    p = generate_phantom(0, PhantomConfig(size=32))
    f = viz.plot_phantom(p)
    _check(f)
    assert p.report[:20] in " ".join(t.get_text().replace("\n", " ") for ax in f.axes
                                     for t in ax.texts)
    steps = [DicomStep(f"{i}. stage", RNG.random((16, 12)), f"note {i}") for i in (1, 2, 3, 4)]
    f = viz.plot_dicom_steps(steps)
    _check(f, synthetic=False, side_marker=False)
    shown = [ax for ax in f.axes if ax.images]
    assert [ax.get_title().split("\n")[0] for ax in shown] == [s.title for s in steps]
    assert any(t.get_text() == "R" for t in shown[-1].texts)  # the kit output is a whole X-ray
    imgs = {"a": RNG.random((8, 8)), "b": 2 * RNG.random((4, 4))}
    f = viz.plot_intensity_histograms(imgs)
    assert len(f.axes) == 2
    for ax in f.axes:  # fractions of pixels
        assert sum(p.get_height() for p in ax.patches) == pytest.approx(1.0)


def test_attention_heads_share_one_scale_per_row_and_grids_have_whole_ticks() -> None:
    res = _attention()
    fig = viz.plot_attention_heads(res, (1, 2))
    heads = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
    for layer in range(res.n_layers):
        row = [ax for ax in heads if ax.get_title().startswith(f"layer {layer} ")]
        clims = {ax.images[-1].get_clim() for ax in row}
        assert len(row) == res.n_heads and len(clims) == 1  # the row's one colourbar is true
    fig = viz.plot_mask_overlay(IMG, np.arange(0, 8), np.array([[10, 11]]), patch_size=8)
    fig.canvas.draw()
    grid_ax = next(ax for ax in fig.axes if ax.get_xlabel() == "patch column")
    ticks = grid_ax.get_xticks()
    assert len(ticks) and np.allclose(ticks, np.round(ticks))


def test_sampled_masks_figure() -> None:
    fig = viz.plot_sampled_masks(np.zeros((64, 64), np.float32), seed=1, patch_size=8,
                                 synthetic=True)
    _check(fig)
    assert "context patches" in _titles(fig)


def test_latent_and_nn_figures() -> None:
    cos = np.full((4, 4), np.nan)
    cos[1:3, 1:3] = 0.5
    rgb = RNG.random((4, 4, 3))
    lat = LatentResult(IMG, (4, 4), 8, np.arange(5), np.array([[5, 6, 9, 10]]),
                       RNG.normal(size=(1, 4, 8)), RNG.normal(size=(1, 4, 8)),
                       RNG.normal(size=(16, 8)), np.full((1, 4), 0.5), cos,
                       np.where(np.isnan(cos)[..., None], np.nan, rgb), rgb)
    fig = viz.plot_latents(lat, synthetic=True)
    _check(fig)
    assert any("cosine" in (ax.get_ylabel() or "") for ax in fig.axes)  # colourbar label
    nn = NNCrops(RNG.random((2, 3, 8, 8)), RNG.random((2, 3)), np.zeros((2, 3), int),
                 RNG.random((2, 8, 8)))
    _check(viz.plot_nn_crops(nn, synthetic=True), side_marker=False)  # crops, not whole images


def test_chart_figures() -> None:
    hist = [{"step": s, "loss": 1 / (s + 1), "lr": 1e-3, "rankme": 10 + s} for s in range(5)]
    f = viz.plot_training_curves(hist, keys=("loss", "lr", "rankme", "missing"))
    assert len(f.axes) == 3 and f.axes[0].get_xlabel() == "step"
    # the RankMe-split monitors are labelled from the k in their key, whatever k is
    split = [{"step": 1, "rankme_tail7": 50.0, "top7_share": 0.4}]
    f = viz.plot_training_curves(split, keys=("rankme_tail7", "top7_share"))
    assert [a.get_ylabel() for a in f.axes] == [  # one y label per panel, no titles
        "RankMe without the 7 leading directions", "share of the 7 leading singular values"]
    y = (RNG.random((60, 2)) < 0.4).astype(float)
    s = y + RNG.normal(size=y.shape)
    f = viz.plot_pr_curves(pr_curves(y, s, ["a", "b"]), {"a": 0.4}, synthetic=True)
    _check(f)
    assert f.axes[0].get_xlabel() == "recall"
    _check(viz.plot_embedding(Projection(RNG.normal(size=(60, 2)), "umap"), y[:, 0], "a",
                              synthetic=True))
    f = viz.plot_embedding(RNG.normal(size=(60, 2)), RNG.random(60), "age", method="pca")
    assert len(f.axes) == 2  # continuous values -> colourbar
    sets = [FeatureSet("x", s, s), FeatureSet("noise", RNG.normal(size=s.shape),
                                              RNG.normal(size=s.shape))]
    rows, _ = compare_encoders(sets, y, y, ["a", "b"], baseline="noise", probes=("linear",),
                               n_resamples=20)
    f = viz.plot_probe_bars(rows, synthetic=True)
    _check(f)
    assert f.axes[0].get_ylabel() == "macro AUPRC"
    assert len(f.axes[0].containers) >= 2  # bars + error bars
    viz.plot_probe_bars([r.to_dict() for r in rows], per_class=False)
    rr = RetrievalResult(np.array([0]), np.array([0.9]), ["heart normal"], ["heart enlarged"],
                         0.5, 0.1, {"macro": 0.5})
    _check(viz.plot_retrieval_table(rr, synthetic=True))
    edges = np.linspace(0, 1, 5)
    viz.plot_ratio_histograms({"edges": edges, "context_hist": np.ones(4), "target_hist": np.ones(4)})


def test_widget_callbacks_show_errors(capsys) -> None:
    pytest.importorskip("ipywidgets")
    from ipywidgets import Output

    from radjepa_lab.viz.widgets import render_into, umap_widget

    def broken():
        raise ValueError("bad slider value")

    out = Output()
    err = render_into(out, broken)
    assert isinstance(err, ValueError)
    shown = "".join(o.get("text", "") for o in out.outputs)
    assert "bad slider value" in shown and "Traceback" in shown
    render_into(out, lambda: (viz.new_figure(1, 1)[0], viz.new_figure(1, 1)[0]))  # two figures
    assert [o["output_type"] for o in out.outputs] == ["display_data"] * 2  # replaced, not added
    assert all(o["data"]["image/png"] for o in out.outputs)
    box = umap_widget(RNG.normal(size=(20, 2)), {"a": RNG.random(20) > 0.5, "b": RNG.random(20)})
    dropdown = box.children[0]
    dropdown.value = "b"  # triggers a redraw through the plain function, no exception
    assert [o["output_type"] for o in box.children[1].outputs] == ["display_data"]


def test_model_widgets_build_and_redraw(capsys, tiny_model, tiny_encoder) -> None:
    pytest.importorskip("ipywidgets")
    from radjepa_lab.models import build_predictor
    from radjepa_lab.viz.widgets import attention_widget, latent_widget, mask_widget

    enc = tiny_encoder
    box = attention_widget(enc, IMG)
    box.children[0].children[0].value = 0  # move the patch picker
    latent_widget(enc, build_predictor(tiny_model), enc, IMG).children[0].children[1].value = 3
    mask_widget(np.zeros((64, 64), np.float32)).children[1].children[2].value = 5
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err


def test_side_by_side_figures_of_several_models() -> None:
    """Notebook 09's figures: runs' curves (losses relative to their first value), one map per
    model over the same image, one embedding per model coloured by the same values."""
    hist = {"A": [{"step": s, "loss": 4.0 / (s + 1), "rankme": 10 + s} for s in range(4)],
            "B": [{"step": s, "loss": 0.5, "teacher_entropy": 3.0, "teacher_entropy_max": 6.9}
                  for s in range(4)]}
    f = viz.plot_run_curves(hist, ("loss", "rankme", "teacher_entropy", "missing"))
    assert [a.get_ylabel() for a in f.axes] == [
        "loss / its first logged value", "RankMe (effective rank)",
        "DINO teacher target entropy (nats)"]
    first = f.axes[0].lines[0].get_ydata()
    assert first[0] == 1.0 and first[-1] == 0.25  # relative to the first logged loss
    assert any(ln.get_ydata()[0] == 6.9 for ln in f.axes[2].lines)  # log K drawn
    img = RNG.random((32, 32))
    f = viz.plot_maps_side_by_side(img, {"A": RNG.random((4, 4)), "B": RNG.random((4, 4))},
                                   title="t", label="w", synthetic=True)
    assert [a.get_title() for a in f.axes[:3]] == ["image", "A", "B"]
    f = viz.plot_embeddings_side_by_side({"A": Projection(RNG.normal(size=(30, 2)), "pca"),
                                          "B": RNG.normal(size=(30, 2))},
                                         (RNG.random(30) < 0.5).astype(float), "finding")
    assert [a.get_title() for a in f.axes] == ["A", "B"] and "finding" in f._suptitle.get_text()
