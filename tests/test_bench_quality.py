"""bench/quality.py: the demo's protocol on a checkpoint, and its summary of the run's monitors
(the RankMe dip diagnosis in the README; the summary itself is tested in test_monitors)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import write_kit_checkpoint

from radjepa_lab.presets import get_preset

BENCH = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


def _quality():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quality_bench_reports_the_lead_table_and_the_rankme_dip(tmp_path: Path, capsys) -> None:
    ckpt = write_kit_checkpoint(tmp_path / "run" / "checkpoint.pt", cfg=get_preset("smoke"))
    rows = [  # RankMe dips at step 40 while only the leading directions grow
        {"step": 1, "loss": 0.5, "rankme": 40.0, "rankme_tail5": 60.0, "top5_share": 0.40},
        {"step": 20, "loss": 0.3, "rankme": 36.0, "rankme_tail5": 59.0, "top5_share": 0.45},
        {"step": 40, "loss": 0.2, "rankme": 35.0, "rankme_tail5": 58.5, "top5_share": 0.47},
        {"step": 60, "loss": 0.1, "rankme": 41.0, "rankme_tail5": 58.0, "top5_share": 0.41},
    ]
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "bench"
    assert _quality().main(["--checkpoint", str(ckpt), "--profile", "smoke", "--quick",
                            "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    q = json.loads((out / "quality.json").read_text())
    rk = q["history"]["checkpoint"]  # read from the metrics.jsonl beside the checkpoint
    assert (rk["rankme_start"], rk["rankme_min"], rk["rankme_min_step"], rk["rankme_end"]) == (
        40.0, 35.0, 40, 41.0)
    assert rk["rankme_tail5_at_rankme_min"] == 58.5 and rk["rankme_tail5_min"] == 58.0
    assert rk["top5_share_max"] == pytest.approx(0.47) and rk["loss_end"] == 0.1
    assert rk["no_collapse"] is False
    assert "RankMe 40.0 -> lowest 35.0 (step 40) -> 41.0" in capsys.readouterr().out
    models = [r["model"] for r in q["lead"]]
    assert models[0] == "checkpoint" and len(models) == 3
    assert any("random" in m for m in models) and any("pixels" in m for m in models)
    assert (out / "report" / "index.html").exists()


def test_several_named_checkpoints_get_the_objectives_table(tmp_path: Path, capsys) -> None:
    """bench/objectives.sh's call: named checkpoints, one row each and every pair's paired Δ."""
    a = write_kit_checkpoint(tmp_path / "a" / "checkpoint.pt", cfg=get_preset("smoke"))
    b = write_kit_checkpoint(tmp_path / "b" / "checkpoint.pt", cfg=get_preset("smoke"), seed=1)
    out = tmp_path / "bench"
    assert _quality().main(["--checkpoint", str(a), "--name", "first", "--checkpoint", str(b),
                            "--name", "second", "--profile", "smoke", "--quick", "--out",
                            str(out), "--no-progress", "--device", "cpu"]) == 0
    q = json.loads((out / "quality.json").read_text())
    assert [r["model"] for r in q["objectives"]] == ["first", "second"]
    assert [r["comparison"] for r in q["pairs"]] == ["first − second"]
    assert "Objectives side by side" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one name per checkpoint
        _quality().main(["--checkpoint", str(a), "--checkpoint", str(b), "--name", "x",
                         "--out", str(out)])
