"""Fuzz the multi-block mask sampler on random grids, scales, aspects, counts and seeds: every
batch it returns keeps the I-JEPA invariants; an impossible request is a ConfigError."""

from __future__ import annotations

import pytest
import torch
from guards import time_limit
from hypothesis import given
from hypothesis import strategies as st

from radjepa_lab.config import EQUALIZE, MaskConfig
from radjepa_lab.errors import ConfigError
from radjepa_lab.masks import MultiBlockMaskSampler


def scale_range(lo: float, hi: float) -> st.SearchStrategy[tuple[float, float]]:
    return st.tuples(st.floats(lo, hi), st.floats(lo, hi)).map(sorted).map(tuple)


@st.composite
def sampler_setup(draw: st.DrawFn) -> tuple[tuple[int, int], MaskConfig, int, int]:
    grid = (draw(st.integers(1, 16)), draw(st.integers(1, 16)))
    n = grid[0] * grid[1]
    cfg = MaskConfig(
        enc_scale=draw(scale_range(0.05, 1.0)),
        pred_scale=draw(scale_range(0.01, 0.6)),
        enc_aspect=draw(scale_range(0.25, 4.0)),
        pred_aspect=draw(scale_range(0.25, 4.0)),
        n_targets=draw(st.integers(1, 6)),
        min_keep=draw(st.integers(1, max(1, n // 2))),
        per_sample=draw(st.booleans()),
        equalize=draw(st.sampled_from(EQUALIZE)),
        allow_overlap=draw(st.booleans()),
        max_tries=draw(st.integers(1, 60)),
    )
    return grid, cfg, draw(st.integers(1, 6)), draw(st.integers(0, 2**31 - 1))


def _in_box(idx: torch.Tensor, box: torch.Tensor, gw: int) -> bool:
    t, left, h, w = (int(v) for v in box)
    r, c = idx // gw, idx % gw
    return bool(((r >= t) & (r < t + h) & (c >= left) & (c < left + w)).all())


@given(setup=sampler_setup())
def test_sampler_invariants(setup: tuple[tuple[int, int], MaskConfig, int, int]) -> None:
    grid, cfg, b, seed = setup
    gh, gw = grid
    n = gh * gw
    sampler = MultiBlockMaskSampler(grid, cfg)
    with time_limit(10, f"sample(grid={grid})"):
        try:
            mb = sampler.sample(b, torch.Generator().manual_seed(seed))
        except ConfigError as e:  # only when no redraw could satisfy min_keep
            assert "min_keep" in str(e) and str(cfg.max_tries) in str(e)
            return
    m = cfg.n_targets
    ctx, tgt = mb.context, mb.targets
    assert ctx.dtype == tgt.dtype == torch.long
    assert ctx.shape[0] == b and cfg.min_keep <= ctx.shape[1] <= n
    assert tgt.shape[:2] == (m, b) and 1 <= tgt.shape[2] <= n
    for rows in (ctx, tgt.reshape(m * b, -1)):
        assert int(rows.min()) >= 0 and int(rows.max()) < n
        assert bool((rows[:, 1:] > rows[:, :-1]).all())  # sorted, no duplicates
    cb, tb = mb.context_boxes, mb.target_boxes  # [B, 4], [M, B, 4]
    for boxes in (cb, tb.reshape(-1, 4)):
        t, left, h, w = boxes.unbind(-1)
        assert bool(((h >= 1) & (w >= 1) & (t >= 0) & (left >= 0)).all())
        assert bool(((t + h <= gh) & (left + w <= gw)).all())
    if not cfg.per_sample:  # one block size per batch
        assert len({tuple(x[2:].tolist()) for x in tb.reshape(-1, 4)}) == 1
        assert len({tuple(x[2:].tolist()) for x in cb}) == 1
    assert bool((mb.context_sizes >= cfg.min_keep).all())
    for i in range(b):
        assert _in_box(ctx[i], cb[i], gw)
        for j in range(m):
            assert _in_box(tgt[j, i], tb[j, i], gw)
        if not cfg.allow_overlap:
            assert not set(ctx[i].tolist()) & set(tgt[:, i].flatten().tolist())
    again = sampler.sample(b, torch.Generator().manual_seed(seed))  # same seed, same bytes
    assert torch.equal(again.context, ctx) and torch.equal(again.targets, tgt)


@given(grid=st.tuples(st.integers(-2, 0), st.integers(-2, 6)))
def test_degenerate_grids_are_config_errors(grid: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match="grid"):
        MultiBlockMaskSampler(grid, MaskConfig(min_keep=1))


@given(lo=st.floats(-1.0, 2.0, allow_nan=False), hi=st.floats(-1.0, 2.0, allow_nan=False))
def test_invalid_scales_are_config_errors(lo: float, hi: float) -> None:
    valid = 0 < lo <= hi <= 1
    if valid:
        assert MaskConfig(pred_scale=(lo, hi)).pred_scale == (lo, hi)
    else:
        with pytest.raises(ConfigError, match="pred_scale"):
            MaskConfig(pred_scale=(lo, hi))
