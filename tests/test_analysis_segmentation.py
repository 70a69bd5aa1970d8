"""Dice and the linear segmentation probe on tokens that encode the mask."""

from __future__ import annotations

import numpy as np
import pytest

from radjepa_lab.analysis.segmentation import dice, dice_per_structure, evaluate_seg_head


def test_dice_known_values() -> None:
    m = np.zeros((8, 8), bool)
    m[2:6, 2:6] = True
    assert dice(m, m) == 1.0
    assert dice(m, ~m) == 0.0
    half = np.zeros_like(m)
    half[2:6, 2:4] = True  # 8 of the 16 pixels
    assert dice(half, m) == pytest.approx(2 * 8 / (8 + 16))
    assert dice(np.zeros_like(m), np.zeros_like(m)) == 1.0  # both empty


def test_dice_per_structure_shapes_and_values() -> None:
    t = np.zeros((2, 2, 4, 4), bool)
    t[:, 0, :2] = True
    p = t.copy()
    p[:, 1, 0, 0] = True  # structure 1 is empty in truth, one false positive
    d = dice_per_structure(p, t, ["a", "b"])
    assert d == {"a": 1.0, "b": 0.0}


def test_linear_head_segments_a_linearly_encoded_mask() -> None:
    # tokens on a 4x4 grid whose first channel says "inside"; masks at 16x16 px
    rng = np.random.default_rng(0)
    n, g, d, s = 48, 4, 6, 16
    inside = rng.random((n, g, g)) < 0.4
    tokens = rng.normal(size=(n, g, g, d)).astype(np.float32) * 0.3
    tokens[..., 0] += 2.0 * inside
    masks = np.repeat(np.repeat(inside, s // g, axis=1), s // g, axis=2)[:, None]
    res = evaluate_seg_head(tokens[:32], masks[:32], tokens[32:], masks[32:], ["blob"],
                            epochs=40, keep_pred=True, batch_size=8)
    assert res.dice["blob"] > 0.85
    assert res.losses[-1] < res.losses[0]
    assert res.pred is not None and res.pred.shape == (16, 1, s, s)
    # noise tokens cannot segment
    noise = rng.normal(size=tokens.shape).astype(np.float32)
    bad = evaluate_seg_head(noise[:32], masks[:32], noise[32:], masks[32:], ["blob"], epochs=40,
                            batch_size=8)
    assert bad.dice["blob"] < res.dice["blob"] - 0.2
