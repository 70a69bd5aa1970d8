"""The application layer: `make demo` end to end, the probe report and `radjepa-lab embed`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import write_kit_checkpoint

from radjepa_lab.checkpoints import CKPT_FORMAT, save_checkpoint
from radjepa_lab.config import config_to_dict
from radjepa_lab.demo import embed_to_file, probe_report, run_demo
from radjepa_lab.models import build_encoder
from radjepa_lab.presets import get_preset


def test_demo_pipeline_writes_report(tmp_path: Path) -> None:
    index = run_demo(tmp_path / "demo", profile="smoke", progress=False)
    out = index.parent
    assert index.name == "index.html" and index.exists()
    html = index.read_text()
    assert "SYNTHETIC" in html and "Linear probe" in html
    md = (out / "report.md").read_text()
    assert "random" in md and "pixels" in md, "the report must compare against both baselines"
    results = json.loads((out / "results.json").read_text())
    assert results, "results.json is empty"
    timings = json.loads((out / "demo.json").read_text())
    assert timings["preset"] == "smoke" and timings["total_s"] > 0
    metrics = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 40 and all("rankme" in m for m in metrics if m["step"] > 1)
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    for fig in ("probe_bars", "embedding", "attention_rollout", "latents", "training_curves"):
        assert any(fig in p for p in pngs), f"demo report lacks the {fig} figure: {pngs}"


def test_probe_report_end_to_end(tmp_path: Path) -> None:
    ckpt = write_kit_checkpoint(tmp_path / "run" / "checkpoint.pt", cfg=get_preset("smoke"))
    (tmp_path / "run" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / (s + 1), "rankme": 5.0 + s}) + "\n"
                for s in range(3)))
    index = probe_report(ckpt, "phantoms", tmp_path / "report", n_train=48, n_test=32, seed=1,
                         n_resamples=20, umap_method="pca", seg_epochs=2, progress=False)
    out = tmp_path / "report"
    assert index == out / "index.html"
    figs = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"probe_bars", "latents_checkpoint", "attention_rollout_checkpoint",
            "embedding_checkpoint", "segmentation_checkpoint", "retrieval",
            "training_curves_checkpoint"} <= figs
    res = json.loads((out / "results.json").read_text())
    names = {r["name"] for r in res["rows"]}
    assert {"checkpoint [2x2]", "random (kit init) [2x2]", "random (torch init) [2x2]",
            "pixels 16x16"} <= names
    ck = next(r for r in res["rows"] if r["name"] == "checkpoint [2x2]" and r["probe"] == "linear")
    assert ck["baseline"].startswith("random") and ck["delta_vs_baseline"] is not None
    assert set(res["dice"]["checkpoint"]) == {"right_lung", "left_lung", "heart", "ribs"}
    md = (out / "report.md").read_text()
    assert md.startswith("# SYNTHETIC") and "5.0 -> 5.0 -> 7.0" in md  # RankMe first/low/last
    lead = res["lead"]  # the report's first table: the model, its random init, raw pixels
    assert [r["model"] for r in lead][0] == "checkpoint" and lead[-1]["model"] == "raw pixels 16x16"
    assert md.index("Does it learn?") < md.index("Linear probe (frozen features)")


def test_embed_to_file_from_a_minimal_checkpoint(tmp_path: Path) -> None:
    # encoders only: no predictor, step or version (an exported or hand-made file)
    cfg = get_preset("smoke")
    enc = build_encoder(cfg.model)
    ckpt = save_checkpoint(tmp_path / "c.pt", {"format": CKPT_FORMAT, "config": config_to_dict(cfg),
                                               "encoder": enc.state_dict(),
                                               "target_encoder": enc.state_dict()})
    path = embed_to_file(ckpt, "phantoms:6", tmp_path / "emb", pool="2x2", progress=False)
    with np.load(path) as z:
        assert z["pooled"].shape == (6, 4 * cfg.model.embed_dim)
        assert z["labels"].shape == (6, 6) and list(z["classes"])[0] == "cardiomegaly"


def test_two_models_of_different_architectures_each_get_their_random_inits(tmp_path: Path) -> None:
    """The demo's protocol with the shipped-style pair: two kit checkpoints, one lead table."""
    from helpers import tiny_config, tiny_model

    from radjepa_lab.demo import evaluate_checkpoints, lead_rows, load_contender, verdict_lines
    from radjepa_lab.presets import ProbeSizes

    a = write_kit_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = write_kit_checkpoint(tmp_path / "b" / "checkpoint.pt",
                             cfg=tiny_config(model=tiny_model(depth=1)))
    ev = evaluate_checkpoints([load_contender("first", a, "made by hand"),
                               load_contender("second", b)],
                              sizes=ProbeSizes(48, 32, 20), probes=("linear",),
                              segmentation=False, retrieval=False, progress=False)
    assert len(ev.baselines["first"]) == 2 and set(ev.baselines["first"]).isdisjoint(
        ev.baselines["second"])  # one pair of random inits per architecture
    assert ev.row("first").baseline in [f"{n} [2x2]" for n in ev.baselines["first"]]
    assert ev.row("second").baseline in [f"{n} [2x2]" for n in ev.baselines["second"]]
    lead = lead_rows(ev)
    models = [r["model"] for r in lead]
    assert models[:2] == ["first", "second"] and models[-1] == "raw pixels 16x16"
    assert sum(m.startswith("stronger random init") for m in models) == 2
    assert lead[0]["how it was trained"] == "made by hand"
    assert lead[0]["Δ vs raw pixels [95% CI]"] != "—"  # the paired delta against pixels
    lines = verdict_lines(ev)
    assert len(lines) == 2 and lines[0].startswith("first: macro AUPRC")


def test_three_objectives_side_by_side(tmp_path: Path) -> None:
    """Notebook 09's table: a JEPA, a DINO and an MAE run of one encoder, each against the
    shared random inits, against each other, with Dice, RankMe and their training cost."""
    from helpers import blob_images, tiny_config

    from radjepa_lab.checkpoints import export_checkpoint
    from radjepa_lab.demo import (
        evaluate_checkpoints,
        load_contender,
        objective_rows,
        pairwise_rows,
    )
    from radjepa_lab.presets import ProbeSizes, with_objective
    from radjepa_lab.train import pretrain

    contenders = []
    for o in ("jepa", "dino", "mae"):
        res = pretrain(with_objective(tiny_config(steps=4, ckpt_every=4, log_every=2), o),
                       tmp_path / o, dataset=blob_images(32), progress=False)
        path = res.checkpoint if o == "jepa" else export_checkpoint(res.checkpoint,
                                                                    tmp_path / f"{o}.pt")
        contenders.append(load_contender(o.upper(), path))
    assert [c.objective for c in contenders] == ["jepa", "dino", "mae"]
    assert contenders[1].history[-1]["step"] == 4  # the exported copy found its log
    assert contenders[0].jepa is not None and contenders[1].jepa is None
    ev = evaluate_checkpoints(contenders, sizes=ProbeSizes(48, 32, 20), probes=("linear",),
                              retrieval=False, seg_epochs=2, progress=False)
    assert len({tuple(v) for v in ev.baselines.values()}) == 1  # one encoder: shared baselines
    rows = objective_rows(ev)
    assert [r["objective"] for r in rows] == ["JEPA", "DINO", "MAE"]
    for r in rows:
        assert r["images seen"] == f"{4 * 8:,}" and r["images/s"] != "—"
        assert 0 <= float(r["lung Dice"]) <= 1 and r["Δ vs stronger random init [95% CI]"] != "—"
    pairs = pairwise_rows(ev)
    assert [p["comparison"] for p in pairs] == ["JEPA − DINO", "JEPA − MAE", "DINO − MAE"]
    assert all("[" in p["Δ macro AUPRC [95% CI]"] for p in pairs)


def test_demo_fits_its_run_to_a_time_budget(tmp_path: Path) -> None:
    """`radjepa-lab demo --minutes M`: a few timed steps decide the run's length, and the
    report's "how" names the exact `--steps N` that repeats it."""
    index = run_demo(tmp_path / "demo", profile="smoke", progress=False, minutes=0.05,
                     echo=lambda _: None)
    out = index.parent
    timings = json.loads((out / "demo.json").read_text())
    steps = timings["fit"]["steps"]
    assert timings["fit"]["minutes"] == 0.05 and steps >= get_preset("smoke").warmup + 20
    metrics = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == steps
    assert f"--preset smoke --steps {steps} " in (out / "report.md").read_text()
