"""Collapse monitors (RankMe, its split, feature std), their verdicts and the metrics log."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radjepa_lab.errors import RadJEPALabError
from radjepa_lab.monitors import (
    METRICS_NAME,
    append_metrics,
    collapse_summary,
    feature_std,
    rankme,
    rankme_dipped,
    rankme_split,
    read_metrics,
    summarize_history,
    write_metrics,
)


def test_rankme_and_feature_std() -> None:
    rng = np.random.default_rng(0)
    iso = rng.normal(size=(500, 16))
    low = rng.normal(size=(500, 2)) @ rng.normal(size=(2, 16))
    for as_input in (np.asarray, torch.from_numpy):  # analyses pass arrays, the trainer tensors
        assert 14 < rankme(as_input(iso)) <= 16.0
        assert rankme(as_input(low)) < 2.5
        assert feature_std(as_input(iso)) == pytest.approx(1 / np.sqrt(16), rel=0.1)
    # one direction plus a constant offset: centring removes the offset
    g = torch.Generator().manual_seed(0)
    collapsed = torch.randn(512, 1, generator=g) * torch.ones(1, 16) + 3.0
    assert rankme(collapsed) < 1.5
    assert rankme(torch.eye(8), center=False) == pytest.approx(8.0, rel=1e-4)
    near_constant = np.ones((100, 16)) + 1e-9 * rng.normal(size=(100, 16))
    assert feature_std(near_constant) < 1e-6
    assert feature_std(torch.ones(64, 16)) < 1e-6


def _with_singular_values(sv: list[float], n: int = 64, seed: int = 0) -> np.ndarray:
    """Centred [n, len(sv)] features whose singular values are exactly ``sv``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, len(sv)))
    a -= a.mean(0)  # orthonormal columns that are also orthogonal to the ones vector
    q, _ = np.linalg.qr(a)
    v, _ = np.linalg.qr(rng.normal(size=(len(sv), len(sv))))
    return q @ np.diag(sv) @ v.T


def test_rankme_split_separates_leading_growth_from_collapse() -> None:
    tail = [1.0] * 20
    base = _with_singular_values([1.0] * 5 + tail)
    grown = _with_singular_values([6.0] * 5 + tail)  # the leading directions grew
    dead = _with_singular_values([1.0] * 5 + [1.0] * 5 + [1e-6] * 15)  # tail dimensions died
    b, g, d = (rankme_split(x, k=5) for x in (base, grown, dead))
    # equal singular values: RankMe is their count; the tail is the 20 after the first 5
    assert b["rankme"] == pytest.approx(25.0, rel=1e-4)
    assert b["rankme_tail"] == pytest.approx(20.0, rel=1e-4)
    assert b["top_share"] == pytest.approx(5 / 25)
    assert g["top_share"] == pytest.approx(30 / 50)
    # growth of the leading directions lowers RankMe but leaves the tail intact ...
    assert g["rankme"] < 0.8 * b["rankme"] and g["rankme_tail"] == pytest.approx(20.0, rel=1e-4)
    # ... collapse lowers both
    assert d["rankme"] < 0.5 * b["rankme"] and d["rankme_tail"] < 6.0
    assert rankme_split(base, k=5)["rankme"] == pytest.approx(rankme(base))
    with pytest.raises(RadJEPALabError, match="k=25"):
        rankme_split(base, k=25)
    with pytest.raises(RadJEPALabError, match="k must be"):
        rankme_split(base, k=0)


def test_rankme_dip_is_any_log_below_the_first() -> None:
    # issue 4's "does not fall below its init value", read strictly
    assert rankme_dipped(40.0, 39.9)
    assert not rankme_dipped(40.0, 40.0)
    assert not rankme_dipped(40.0, 52.6)


def test_collapse_summary_flags_a_falling_rankme() -> None:
    good = [{"rankme": 10.0, "feat_std": 0.06, "feat_std_ref": 0.07},
            {"rankme": 14.0, "feat_std": 0.06, "feat_std_ref": 0.07}]
    bad = [{"rankme": 14.0}, {"rankme": 4.8}]
    assert "healthy" in collapse_summary(good)
    assert "WARNING" in collapse_summary(bad) and "14.0 -> 4.8" in collapse_summary(bad)
    flat = [{"rankme": 5.0, "feat_std": 0.001, "feat_std_ref": 0.07}] * 2
    assert "nearly constant" in collapse_summary(flat)
    # a dip: the split after the 5 leading directions says whether dimensions were lost
    grow = [{"rankme": 40.0, "rankme_tail5": 60.0}, {"rankme": 33.0, "rankme_tail5": 59.0},
            {"rankme": 41.0, "rankme_tail5": 58.0}]
    lost = [{"rankme": 40.0, "rankme_tail5": 60.0}, {"rankme": 33.0, "rankme_tail5": 40.0},
            {"rankme": 41.0, "rankme_tail5": 58.0}]
    assert "dipped to 33.0" in collapse_summary(grow)
    assert "60.0 -> 59.0" in collapse_summary(grow) and "leading directions grew" in (
        collapse_summary(grow))
    assert "dimensions were lost" in collapse_summary(lost)
    assert "dipped" not in collapse_summary(good)
    # strict: a log even 0.25 % under the first one is a dip (issue 4, "not below its init value")
    small = [{"rankme": 40.0}, {"rankme": 39.9}, {"rankme": 41.0}]
    assert "dipped to 39.9" in collapse_summary(small)


def test_summarize_history_finds_the_dip_and_its_tail() -> None:
    rows = [  # RankMe dips at step 40 while only the leading directions grow
        {"step": 1, "loss": 0.5, "rankme": 40.0, "rankme_tail5": 60.0, "top5_share": 0.40},
        {"step": 20, "loss": 0.3, "rankme": 36.0, "rankme_tail5": 59.0, "top5_share": 0.45},
        {"step": 40, "loss": 0.2, "rankme": 35.0, "rankme_tail5": 58.5, "top5_share": 0.47},
        {"step": 60, "loss": 0.1, "rankme": 41.0, "rankme_tail5": 58.0, "top5_share": 0.41},
    ]
    rk = summarize_history(rows)
    assert (rk["rankme_start"], rk["rankme_min"], rk["rankme_min_step"], rk["rankme_end"]) == (
        40.0, 35.0, 40, 41.0)
    assert rk["rankme_tail5_at_rankme_min"] == 58.5 and rk["rankme_tail5_min"] == 58.0
    assert rk["top5_share_max"] == pytest.approx(0.47) and rk["loss_end"] == 0.1
    assert rk["no_collapse"] is False and rk["rankme_rises"] is True  # dipped, yet ended higher
    # logs from before the split was monitored still summarise, without the tail keys
    old = summarize_history([{"step": r["step"], "rankme": r["rankme"]} for r in rows])
    assert old["rankme_min"] == 35.0 and "rankme_tail5_start" not in old
    assert old["loss_start"] is None
    assert summarize_history([{"step": 1, "loss": 0.5}]) == {}  # no RankMe logged


def test_metrics_log_survives_a_torn_line_and_rewrites_atomically(tmp_path) -> None:
    path = tmp_path / METRICS_NAME
    assert read_metrics(path) == []  # no log yet
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
    write_metrics(path, rows[:2])
    append_metrics(path, rows[2])
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"step": 4, "lo')  # a crash in the middle of a write
    assert read_metrics(path) == rows
    assert read_metrics(path, upto=2) == rows[:2]  # a resumed run drops its lost future
    write_metrics(path, rows[:1])
    assert read_metrics(path) == rows[:1]
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_NAME]  # no temp file left behind
