"""Attention capture is side-effect free; rollout rows are distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radjepa_lab.analysis.attention import (
    attention_maps,
    attention_received,
    attention_rollout,
    capture_attention,
    query_attention,
    rollout_map,
    upsample_map,
)


def test_capture_leaves_outputs_unchanged_and_restores_fused(tiny_encoder) -> None:
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    flags = [b.attn.fused_attn for b in tiny_encoder.blocks]
    n_hooks = [len(b.attn.attn_drop._forward_hooks) for b in tiny_encoder.blocks]
    with torch.no_grad():
        before = tiny_encoder(x)
        with capture_attention(tiny_encoder) as store:
            assert all(b.attn.fused_attn is False for b in tiny_encoder.blocks)
            during = tiny_encoder(x)
        after = tiny_encoder(x)
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, before)
    assert [b.attn.fused_attn for b in tiny_encoder.blocks] == flags
    assert [len(b.attn.attn_drop._forward_hooks) for b in tiny_encoder.blocks] == n_hooks
    a = store.maps[0]
    assert a.shape == (2, 2, 16, 16)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 16))


def test_capture_restores_even_after_an_error(tiny_encoder) -> None:
    flags = [b.attn.fused_attn for b in tiny_encoder.blocks]
    with pytest.raises(RuntimeError), capture_attention(tiny_encoder):
        raise RuntimeError("boom")
    assert [b.attn.fused_attn for b in tiny_encoder.blocks] == flags


def test_captured_weights_equal_manual_softmax(tiny_encoder) -> None:
    x = torch.rand(1, 1, 32, 32)
    blk = tiny_encoder.blocks[0]
    with torch.no_grad(), capture_attention(tiny_encoder) as store:
        tiny_encoder(x)
        h = blk.norm1(tiny_encoder.embed(x))
        att = blk.attn
        qkv = att.qkv(h).reshape(1, 16, 3, att.num_heads, -1).permute(2, 0, 3, 1, 4)
        manual = ((qkv[0] * att.scale) @ qkv[1].transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(store.maps[0], manual, atol=1e-5, rtol=1e-4)


def test_rollout_rows_sum_to_one_and_maps(tiny_encoder) -> None:
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    res = attention_maps(tiny_encoder, img)
    assert res.attn.shape == (2, 2, 16, 16) and res.grid == (4, 4)
    r = attention_rollout(res.attn)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-9)
    assert (r >= 0).all()
    # identity attention -> rollout is the identity
    eye = np.broadcast_to(np.eye(5), (3, 2, 5, 5))
    np.testing.assert_allclose(attention_rollout(eye), np.eye(5))
    q = query_attention(res, (1, 2))
    assert q.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(q.sum(axis=(2, 3)), 1.0, atol=1e-5)
    m = rollout_map(res, (1, 2))
    assert m.shape == (4, 4) and m.sum() == pytest.approx(1.0)
    assert rollout_map(res).sum() == pytest.approx(1.0)
    rec = attention_received(res)
    assert rec.shape == (2, 4, 4) and rec.mean() == pytest.approx(1 / 16, rel=1e-4)
    assert upsample_map(m, (32, 32)).shape == (32, 32)
