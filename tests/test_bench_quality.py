"""bench/quality.py's summary of a run's monitors (the RankMe dip diagnosis in the README)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


def _quality():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rankme_history_finds_the_dip_and_its_tail(tmp_path: Path) -> None:
    rows = [  # RankMe dips at step 40 while only the leading directions grow
        {"step": 1, "loss": 0.5, "rankme": 40.0, "rankme_tail5": 60.0, "top5_share": 0.40},
        {"step": 20, "loss": 0.3, "rankme": 36.0, "rankme_tail5": 59.0, "top5_share": 0.45},
        {"step": 40, "loss": 0.2, "rankme": 35.0, "rankme_tail5": 58.5, "top5_share": 0.47},
        {"step": 60, "loss": 0.1, "rankme": 41.0, "rankme_tail5": 58.0, "top5_share": 0.41},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rk = _quality()._rankme_history(path)
    assert (rk["rankme_start"], rk["rankme_min"], rk["rankme_min_step"], rk["rankme_end"]) == (
        40.0, 35.0, 40, 41.0)
    assert rk["rankme_tail5_at_rankme_min"] == 58.5 and rk["rankme_tail5_min"] == 58.0
    assert rk["top5_share_max"] == pytest.approx(0.47) and rk["loss_end"] == 0.1
    # logs from before the split was monitored still summarise, without the tail keys
    path.write_text("".join(json.dumps({"step": r["step"], "rankme": r["rankme"]}) + "\n"
                            for r in rows))
    old = _quality()._rankme_history(path)
    assert old["rankme_min"] == 35.0 and "rankme_tail5_start" not in old
