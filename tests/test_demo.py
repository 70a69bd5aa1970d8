"""`make demo` end to end on the smoke profile: every stage runs and the report says what it measured."""

from __future__ import annotations

import json
from pathlib import Path

from radjepa_lab.demo import run_demo


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
