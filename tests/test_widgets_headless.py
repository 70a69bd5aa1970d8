"""The widget-building cells, executed headless again and again as nbmake runs them: each run
must finish within its time limit (an attention widget drawing two figures into an Output once
left the client waiting on an idle kernel in some runs). ``RADJEPA_WIDGET_RUNS=100`` repeats
them 100 times, the soak the hang was first seen in."""

from __future__ import annotations

import os
import time

import nbformat
import pytest

RUNS = int(os.environ.get("RADJEPA_WIDGET_RUNS", "8"))
TIMEOUT_S = 60

CELLS = [
    "import matplotlib\nmatplotlib.use('Agg')\n"
    "from radjepa_lab.notebook import setup\nprofile = setup(verbose=False)",
    "from radjepa_lab.config import ModelConfig\n"
    "from radjepa_lab.data.phantom import PhantomConfig, generate_phantom\n"
    "from radjepa_lab.models import build_encoder, build_predictor\n"
    "cfg = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,\n"
    "                  pred_embed_dim=16, pred_depth=1, pred_num_heads=2)\n"
    "enc = build_encoder(cfg)\n"
    "image = generate_phantom(seed=1, cfg=PhantomConfig(size=32)).image",
    "from radjepa_lab.viz.widgets import attention_widget\n"
    "box = attention_widget(enc, image, synthetic=True)\nbox",
    "box.children[0].children[0].value = 1  # move the patch picker: a redraw of both figures\n"
    "box.children[0].children[2].value = 0",
    "from radjepa_lab.viz.widgets import latent_widget, mask_widget\n"
    "latent_widget(enc, build_predictor(cfg), build_encoder(cfg), image)",
    "mask_widget(image, patch_size=8)",
]


def test_widget_cells_never_hang_headless(tmp_path, monkeypatch) -> None:
    pytest.importorskip("ipywidgets")
    from nbclient import NotebookClient

    monkeypatch.setenv("RADJEPA_LAB_PROFILE", "smoke")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    slowest = 0.0
    for _ in range(RUNS):
        run = nbformat.from_dict(nb)
        t0 = time.perf_counter()
        NotebookClient(run, timeout=TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        slowest = max(slowest, time.perf_counter() - t0)
        widget_out = run.cells[2].outputs
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for o in widget_out), widget_out
        assert not any(o.get("output_type") == "error" for c in run.cells for o in c.outputs)
    assert slowest < TIMEOUT_S
