"""Report writer and the end-to-end probe report on a tiny kit checkpoint."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from radjepa_lab.analysis.report import ReportSection, markdown_table, write_report  # noqa: E402


def test_markdown_table_escapes_pipes() -> None:
    md = markdown_table([{"a": "x | y", "b": 0.12345}, {"a": "z", "b": float("nan")}])
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b |"
    assert lines[2] == "| x \\| y | 0.123 |"
    assert lines[3] == "| z | — |"


def test_write_report_files(tmp_path) -> None:
    from radjepa_lab.viz import plot_coverage

    sec = ReportSection("Masks", "Some text.\n\n- one\n- two",
                        tables=[("t", [{"k": 1}])],
                        figures=[("cov", plot_coverage(np.ones((4, 4))), "coverage")])
    index = write_report(tmp_path, "Title <x>", [sec])
    assert index.name == "index.html"
    html = index.read_text()
    assert "Title &lt;x&gt;" in html and "<li>one</li>" in html and "figures/cov.png" in html
    assert (tmp_path / "figures" / "cov.png").stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    assert "## Masks" in md and "![coverage](figures/cov.png)" in md


def test_probe_report_end_to_end(tmp_path) -> None:
    pytest.importorskip("radjepa_lab.data.phantom")
    from radjepa_lab.analysis.report import probe_report
    from radjepa_lab.config import config_to_dict, get_preset
    from radjepa_lab.models import build_encoder, build_predictor
    from radjepa_lab.train import CKPT_FORMAT, CKPT_VERSION, save_checkpoint

    cfg = get_preset("smoke")
    enc = build_encoder(cfg.model)
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoint.pt", {
        "format": CKPT_FORMAT, "version": CKPT_VERSION, "step": 0, "config": config_to_dict(cfg),
        "encoder": enc.state_dict(), "target_encoder": enc.state_dict(),
        "predictor": build_predictor(cfg.model).state_dict(),
    })
    (tmp_path / "run" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / (s + 1), "rankme": 5.0 + s}) + "\n"
                for s in range(3)))
    index = probe_report(ckpt, "phantoms", tmp_path / "report", n_train=48, n_test=32, seed=1,
                         n_resamples=20, umap_method="pca", seg_epochs=2, progress=False)
    out = tmp_path / "report"
    assert index == out / "index.html"
    figs = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"probe_bars", "latents", "attention_rollout", "embedding", "segmentation",
            "retrieval", "training_curves"} <= figs
    res = json.loads((out / "results.json").read_text())
    names = {r["name"] for r in res["rows"]}
    assert {"checkpoint [2x2]", "random (kit init) [2x2]", "random (torch init) [2x2]",
            "pixels 16x16"} <= names
    ck = next(r for r in res["rows"] if r["name"] == "checkpoint [2x2]" and r["probe"] == "linear")
    assert ck["baseline"].startswith("random") and ck["delta_vs_baseline"] is not None
    assert set(res["dice"]["checkpoint"]) == {"right_lung", "left_lung", "heart", "ribs"}
    md = (out / "report.md").read_text()
    assert md.startswith("# SYNTHETIC") and "RankMe during pretraining: 5.0" in md
