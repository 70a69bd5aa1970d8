"""Encoder / predictor behaviour: masking, positions, batching, init, normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import tiny_model

from radjepa_lab.config import ModelConfig
from radjepa_lab.errors import ConfigError
from radjepa_lab.models import (
    Predictor,
    VisionTransformer,
    apply_masks,
    build_encoder,
    build_predictor,
    evaluating,
    pooled_embedding,
    sincos_pos_embed,
)

TINY = tiny_model()  # read-only here; tests that build the encoder take the tiny_encoder fixture


def _ijepa_sincos(dim: int, gh: int, gw: int) -> np.ndarray:
    """The I-JEPA formula written out by hand: first half column, second half row."""

    def one(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return np.concatenate([one(dim // 2, cols), one(dim // 2, rows)], axis=1)


def test_sincos_matches_ijepa_layout_on_non_square_grid() -> None:
    pe = sincos_pos_embed(16, (3, 5))
    assert pe.shape == (1, 15, 16)
    np.testing.assert_allclose(pe[0].numpy(), _ijepa_sincos(16, 3, 5), atol=1e-6)


def test_pos_embed_is_a_fixed_buffer_not_a_parameter(tiny_encoder: VisionTransformer) -> None:
    enc = tiny_encoder
    names = {n for n, _ in enc.named_parameters()}
    assert "pos_embed" not in names
    assert "pos_embed" in dict(enc.named_buffers())
    assert enc.num_prefix_tokens == 0 and enc.cls_token is None


def test_masked_forward_gathers_after_position_embedding() -> None:
    # With no blocks the encoder is per-token, so masking must equal gathering the full output:
    # this fails if positions were added after the gather (tokens would get the wrong position).
    enc = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=0, num_heads=2)
    x = torch.rand(3, 1, 32, 32)
    idx = torch.tensor([[0, 5, 15], [1, 2, 3], [15, 7, 9]])
    full = enc(x)
    np.testing.assert_allclose(enc(x, idx).detach(), apply_masks(full, idx).detach(), atol=1e-6)


def test_masked_forward_with_every_token_equals_full_forward(tiny_encoder: VisionTransformer) -> None:
    enc = tiny_encoder
    x = torch.rand(2, 1, 32, 32)
    idx = torch.arange(16).expand(2, -1)
    torch.testing.assert_close(enc(x, idx), enc(x))


def test_any_input_size_including_non_square(tiny_encoder: VisionTransformer) -> None:
    enc = tiny_encoder
    out = enc(torch.rand(2, 1, 48, 24))
    assert out.shape == (2, 6 * 3, 32)
    assert enc.grid_size(48, 24) == (6, 3)
    assert torch.equal(enc.pos_embed_for((4, 4)), enc.pos_embed)
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        enc(torch.rand(1, 1, 30, 32))


def test_interpolation_with_cls_and_registers_keeps_prefix_tokens_out_of_the_grid() -> None:
    enc = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, class_token=True,
        num_register_tokens=2, in_chans=3, in_mean=(0.4, 0.5, 0.6), in_std=(0.2, 0.2, 0.2),
    ).eval()
    assert enc.num_prefix_tokens == 3
    prefix, patches = enc.forward_with_prefix(torch.rand(2, 1, 40, 56))
    assert prefix.shape == (2, 3, 32) and patches.shape == (2, 35, 32)


def test_forward_layers_last_layer_equals_forward(tiny_encoder: VisionTransformer) -> None:
    enc = tiny_encoder
    x = torch.rand(2, 1, 32, 32)
    first, last = enc.forward_layers(x, [0, -1])
    torch.testing.assert_close(last, enc(x))
    assert first.shape == last.shape and not torch.allclose(first, last)
    with pytest.raises(ConfigError):
        enc.forward_layers(x, [5])


def test_encoder_normalises_inputs_itself(tiny_encoder: VisionTransformer) -> None:
    enc = tiny_encoder
    x = torch.rand(1, 1, 32, 32)
    assert enc.in_mean.item() == TINY.in_mean and enc.in_std.item() == TINY.in_std
    manual = enc.patch_embed((x - TINY.in_mean) / TINY.in_std)
    torch.testing.assert_close(enc.patch_embed(enc.normalize(x)), manual)


def test_rgb_encoder_gets_gray_channel_repeated() -> None:
    enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                            in_chans=3, in_mean=(0.485, 0.456, 0.406),
                            in_std=(0.229, 0.224, 0.225)).eval()
    g = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(enc(g), enc(g.repeat(1, 3, 1, 1)))


def test_predictor_batched_targets_equal_one_call_per_target() -> None:
    pred = build_predictor(TINY).eval()
    b, nc, k, m = 3, 6, 4, 4
    g = torch.Generator().manual_seed(0)
    ctx_idx = torch.stack([torch.randperm(16, generator=g)[:nc].sort().values for _ in range(b)])
    tgt_idx = torch.randint(0, 16, (m, b, k), generator=g)
    ctx = torch.randn(b, nc, TINY.embed_dim, generator=g)
    out = pred(ctx, ctx_idx, tgt_idx)
    assert out.shape == (m, b, k, TINY.embed_dim)
    for i in range(m):
        torch.testing.assert_close(out[i], pred(ctx, ctx_idx, tgt_idx[i : i + 1])[0])


def test_predictor_depends_on_target_position() -> None:
    pred = build_predictor(TINY).eval()
    ctx = torch.randn(1, 4, TINY.embed_dim)
    ctx_idx = torch.tensor([[0, 1, 2, 3]])
    a = pred(ctx, ctx_idx, torch.tensor([[[10]]]))
    b = pred(ctx, ctx_idx, torch.tensor([[[15]]]))
    assert not torch.allclose(a, b)


def test_inits_are_seeded_and_differ() -> None:
    a, b = build_encoder(TINY, seed=3), build_encoder(TINY, seed=3)
    c = build_encoder(TINY, seed=4)
    d = build_encoder(TINY, init="torch_default", seed=3)
    w = "blocks.0.attn.qkv.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    # kit init is trunc-normal(0.02); PyTorch's default Linear init is much wider here
    assert a.state_dict()[w].std() < 0.025 < d.state_dict()[w].std()
    with pytest.raises(ConfigError):
        build_encoder(TINY, init="nope")


def test_xavier_patch_embed_init_is_not_drowned_by_positions() -> None:
    cfg = ModelConfig(patch_init="xavier")
    w = build_encoder(cfg).patch_embed.proj.weight
    fan_in, fan_out = cfg.patch_size**2 * cfg.in_chans, cfg.embed_dim
    expected = math.sqrt(2.0 / (fan_in + fan_out))  # xavier-uniform std
    assert abs(w.std().item() - expected) / expected < 0.05
    tn = build_encoder(ModelConfig(patch_init="trunc_normal")).patch_embed.proj.weight
    assert tn.std().item() < 0.021


def test_pooled_embedding_is_token_average(tiny_encoder: VisionTransformer) -> None:
    enc = tiny_encoder
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(pooled_embedding(enc, x), enc(x).mean(1))


def test_predictor_class_shapes_validated_by_config() -> None:
    with pytest.raises(ConfigError):
        ModelConfig(embed_dim=30, num_heads=3)
    assert isinstance(build_predictor(TINY), Predictor)


def test_evaluating_restores_each_modules_own_mode() -> None:
    enc, pred = build_encoder(TINY).train(), build_predictor(TINY).eval()
    with evaluating(enc, pred):
        assert not enc.training and not pred.training
        assert not any(m.training for m in enc.modules())
    assert enc.training and all(m.training for m in enc.modules()) and not pred.training
    with pytest.raises(RuntimeError), evaluating(enc):
        raise RuntimeError("analysis failed")
    assert enc.training  # restored on the way out of an error too


def test_position_embeddings_resample_like_their_source() -> None:
    import torch.nn.functional as F

    from radjepa_lab.models import resample_pos_embed

    pe = torch.randn(1, 36, 8, generator=torch.Generator().manual_seed(0))
    grid = pe.reshape(1, 6, 6, 8).permute(0, 3, 1, 2)

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 3, 1).reshape(1, -1, 8)

    hf = F.interpolate(grid, size=(4, 3), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resample_pos_embed(pe, (6, 6), (4, 3), "bicubic"), flat(hf))
    aa = F.interpolate(grid, size=(4, 3), mode="bicubic", antialias=True)
    torch.testing.assert_close(resample_pos_embed(pe, (6, 6), (4, 3), "timm"), flat(aa))
    dv2 = F.interpolate(grid, scale_factor=(4.1 / 6, 3.1 / 6), mode="bicubic")
    torch.testing.assert_close(resample_pos_embed(pe, (6, 6), (4, 3), "dinov2"), flat(dv2))
    with pytest.raises(ConfigError, match="pos_interp"):
        resample_pos_embed(pe, (6, 6), (4, 3), "nearest")
    enc = build_encoder(TINY)
    assert enc.pos_interp == "timm"  # the kit's own models keep timm's antialiased resize


def test_dino_head_gives_cosines_to_unit_prototypes() -> None:
    from radjepa_lab.config import DinoConfig
    from radjepa_lab.models import build_dino_head

    head = build_dino_head(TINY, DinoConfig(hidden_dim=16, bottleneck_dim=8, out_dim=10), seed=1)
    x = torch.randn(5, TINY.embed_dim)
    with torch.no_grad():
        logits = head(x)
    assert logits.shape == (5, 10) and float(logits.abs().max()) <= 1.0 + 1e-6
    with torch.no_grad():  # the prototypes' norm does not matter: only their direction
        head.prototypes.mul_(7.0)
        torch.testing.assert_close(head(x), logits)
    again = build_dino_head(TINY, DinoConfig(hidden_dim=16, bottleneck_dim=8, out_dim=10), seed=1)
    torch.testing.assert_close(again.prototypes * 7.0, head.prototypes)  # seeded


def test_mae_decoder_puts_visible_tokens_back_in_place() -> None:
    from radjepa_lab.models import build_mae_decoder, patchify

    dec = build_mae_decoder(TINY).eval()
    keep = torch.tensor([[0, 5, 9], [1, 2, 15]])
    tokens = torch.randn(2, 3, TINY.embed_dim)
    out = dec(tokens, keep)
    assert out.shape == (2, 16, TINY.patch_size**2 * TINY.in_chans)
    shuffled = dec(tokens[:, [2, 0, 1]], keep[:, [2, 0, 1]])  # order of the visible set is free
    torch.testing.assert_close(out, shuffled)
    img = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    patches = patchify(img, 8)  # row-major like the tokens: patch 1 is the top-right one
    assert patches.shape == (2, 4, 64) and torch.equal(patches[0, 1, :8], img[0, 0, 0, 8:])
