"""Checkpoints: the kit's own files (save/load, export, the shipped ones) and encoder import
round-trips, where each foreign format is written by the test from an independent timm ViT
(the layout the real releases use) or by Hugging Face transformers' own Dinov2Model /
IJepaModel (random weights, nothing downloaded), and must reproduce that model's tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import blob_images, tiny_config, tiny_model, write_kit_checkpoint
from timm.models.vision_transformer import VisionTransformer as TimmViT

from radjepa_lab.checkpoints import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SHIPPED_CHECKPOINT,
    SHIPPED_CHECKPOINTS,
    SHIPPED_JEPA_SAME_BUDGET,
    checkpoint_config,
    detect_format,
    export_checkpoint,
    load_checkpoint,
    load_encoder,
    load_jepa,
    save_checkpoint,
    shipped_checkpoints,
    training_log,
)
from radjepa_lab.config import config_to_dict
from radjepa_lab.errors import CheckpointError
from radjepa_lab.models import build_encoder, build_predictor
from radjepa_lab.presets import get_preset
from radjepa_lab.train import TrainResult, pretrain

DIM, HEADS, DEPTH, PATCH, GRID = 32, 2, 2, 8, 4


def _timm(seed: int, **kw) -> TimmViT:
    torch.manual_seed(seed)
    m = TimmViT(
        img_size=PATCH * GRID, patch_size=PATCH, in_chans=3, embed_dim=DIM, depth=DEPTH,
        num_heads=HEADS, num_classes=0, global_pool="", **kw,
    ).eval()
    with torch.no_grad():  # make every tensor (zeros by default: cls, pos...) non-trivial
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _reference_tokens(m: TimmViT, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return m.forward_features((x.repeat(1, 3, 1, 1) - mean) / std)[:, m.num_prefix_tokens :]


def _check(path: Path, ref: TimmViT, **kw) -> None:
    enc = load_encoder(path, num_heads=HEADS, **kw)  # heads cannot be read from shapes
    x = torch.rand(2, 1, PATCH * GRID, PATCH * GRID)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), _reference_tokens(ref, x), atol=1e-5, rtol=1e-5)
    assert enc.num_prefix_tokens == ref.num_prefix_tokens
    assert enc(torch.rand(1, 1, 48, 40)).shape == (1, 30, DIM)  # other sizes interpolate


# ----------------------------------------------------------------------------- encoder import


def test_ijepa_official_format(tmp_path: Path) -> None:
    ctx, tgt = _timm(0, class_token=False), _timm(1, class_token=False)

    def wrap(m: TimmViT) -> dict:
        return {f"module.{k}": v for k, v in m.state_dict().items()}

    path = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    torch.save({"encoder": wrap(ctx), "target_encoder": wrap(tgt),
                "predictor": {"module.mask_token": torch.zeros(1, 1, 8)}, "epoch": 3,
                "opt": {}, "lr": 1e-3}, path)
    assert detect_format(torch.load(path, weights_only=True)) == "ijepa"
    _check(path, tgt)
    _check(path, ctx, which="context")


def test_radjepa_release_format(tmp_path: Path) -> None:
    m = _timm(2, class_token=False)
    path = tmp_path / "jepa_encoder.pth.tar"
    torch.save({"encoder": m.state_dict()}, path)
    _check(path, m, fmt="radjepa")
    _check(path, m)  # auto-detected


def test_dinov2_original_format_with_cls_registers_and_layerscale(tmp_path: Path) -> None:
    m = _timm(3, class_token=True, reg_tokens=2, no_embed_class=True, init_values=1e-5)
    sd = dict(m.state_dict())
    # DINOv2 adds a CLS position row and never positions registers: fold a random CLS row.
    cls_pos = torch.randn(1, 1, DIM)
    sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    sd["cls_token"] = sd["cls_token"] - cls_pos
    sd["register_tokens"] = sd.pop("reg_token")
    sd["mask_token"] = torch.zeros(1, DIM)
    path = tmp_path / "dinov2_vitb14_reg.pth"
    torch.save(sd, path)
    _check(path, m, fmt="dinov2")
    assert load_encoder(path, num_heads=HEADS).blocks[0].ls1.gamma.shape == (DIM,)


def test_rad_dino_huggingface_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    m = _timm(4, class_token=True, init_values=1.0)  # pos_embed has a CLS row here
    hf = {
        "embeddings.cls_token": m.cls_token, "embeddings.mask_token": torch.zeros(1, DIM),
        "embeddings.position_embeddings": m.pos_embed,
        "embeddings.patch_embeddings.projection.weight": m.patch_embed.proj.weight,
        "embeddings.patch_embeddings.projection.bias": m.patch_embed.proj.bias,
        "layernorm.weight": m.norm.weight, "layernorm.bias": m.norm.bias,
    }
    for i, b in enumerate(m.blocks):
        pre = f"encoder.layer.{i}."
        for part, w, bias in zip(
            ("query", "key", "value"), b.attn.qkv.weight.chunk(3), b.attn.qkv.bias.chunk(3),
            strict=True,
        ):
            hf[pre + f"attention.attention.{part}.weight"] = w
            hf[pre + f"attention.attention.{part}.bias"] = bias
        for ours, theirs in (("norm1", b.norm1), ("norm2", b.norm2), ("mlp.fc1", b.mlp.fc1),
                             ("mlp.fc2", b.mlp.fc2), ("attention.output.dense", b.attn.proj)):
            hf[pre + ours + ".weight"] = theirs.weight
            hf[pre + ours + ".bias"] = theirs.bias
        hf[pre + "layer_scale1.lambda1"] = b.ls1.gamma
        hf[pre + "layer_scale2.lambda1"] = b.ls2.gamma
    path = tmp_path / "model.safetensors"
    save_file({k: v.detach().contiguous().clone() for k, v in hf.items()}, str(path))
    _check(path, m)


def test_custom_normalisation_and_heads_override(tmp_path: Path) -> None:
    m = _timm(5, class_token=False)
    path = tmp_path / "enc.pth"
    torch.save({"encoder": m.state_dict()}, path)
    enc = load_encoder(path, in_mean=(0.53,), in_std=(0.26,), num_heads=4)
    assert torch.allclose(enc.in_mean, torch.full((1, 3, 1, 1), 0.53))
    assert enc.blocks[0].attn.num_heads == 4


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"encoder": {"x": torch.zeros(1)}, "obj": Path("/tmp")}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_encoder(path)


def test_missing_and_unknown_files_raise_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "nope.pth")
    path = tmp_path / "odd.pth"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="Unrecognised"):
        load_encoder(path)


# ----------------------------------------------------------------------------- kit files


def test_checkpoint_io(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"format": "radjepa_lab", "step": 1})
    assert load_checkpoint(path)["step"] == 1
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a RadJEPA Lab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "broken.pt")


def test_load_jepa_restores_all_three_networks(tmp_path: Path) -> None:
    path = write_kit_checkpoint(tmp_path / "c.pt", step=2, seed=4)
    jepa = load_jepa(path)
    ref = build_encoder(tiny_model(), seed=4)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(jepa.encoder(x), ref(x))
        assert torch.allclose(jepa.target_encoder(x), ref(x))
    pred = build_predictor(tiny_model(), seed=4).state_dict()
    got = jepa.predictor.state_dict()
    assert set(got) == set(pred) and all(torch.equal(got[k], pred[k]) for k in pred)
    assert not jepa.encoder.training and jepa.info["step"] == 2
    assert jepa.config.model == tiny_model()


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A 3-step tiny pretraining run: the kit's full checkpoint, with optimiser and RNG."""
    return pretrain(tiny_config(steps=3, ckpt_every=3), tmp_path_factory.mktemp("run"),
                    dataset=blob_images(16), progress=False)


def test_kit_checkpoint_round_trip(kit_run: TrainResult) -> None:
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(kit_run.checkpoint)(x), kit_run.target_encoder(x))
        ctx = load_encoder(kit_run.checkpoint, which="context")
        torch.testing.assert_close(ctx(x), kit_run.encoder(x))
    assert detect_format(torch.load(kit_run.checkpoint, weights_only=True)) == "kit"


def test_export_checkpoint_is_small_half_precision_and_loads(kit_run: TrainResult,
                                                             tmp_path: Path) -> None:
    """The shipped checkpoint's format: target encoder + predictor in float16, no optimiser."""
    dst = export_checkpoint(kit_run.checkpoint, tmp_path / "small.pt")
    state = load_checkpoint(dst)
    assert "optimizer" not in state and "encoder" not in state and "rng" not in state
    assert all(v.dtype == torch.float16 for v in state["target_encoder"].values()
               if v.is_floating_point())
    assert dst.stat().st_size < kit_run.checkpoint.stat().st_size / 2
    full = load_encoder(kit_run.checkpoint, which="target")
    small = load_encoder(dst, which="target")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        err = (full(x) - small(x)).abs().max().item()
    assert err < 5e-2, f"float16 export changed the outputs by {err}"
    jepa = load_jepa(dst)
    assert jepa.info["context_from_target"] is True
    with pytest.raises(CheckpointError, match="which='target'"):
        load_encoder(dst, which="context")


def test_shipped_checkpoint_matches_its_documented_recipe() -> None:
    """data/README.md says the shipped checkpoint is ``--preset gpu-phantom``; prove it, so the
    documented command cannot drift from the file the notebooks load."""
    state = load_checkpoint(SHIPPED_CHECKPOINT)
    assert SHIPPED_CHECKPOINT.stat().st_size <= 10 * 2**20
    # its stored config predates the move of expected_minutes/description to presets.PRESETS;
    # checkpoint_config drops those two legacy keys
    want = config_to_dict(get_preset("gpu-phantom"))
    got = config_to_dict(checkpoint_config(state))
    want.pop("device"), got.pop("device")
    assert got == want
    assert state["step"] == want["steps"]
    # its training log sits beside it and shows RankMe rising over the run
    log = [json.loads(ln) for ln in
           (SHIPPED_CHECKPOINT.parent / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert log[-1]["step"] == want["steps"]
    rk = [r["rankme"] for r in log if r.get("rankme") is not None]
    assert rk[-1] > 1.5 * rk[0]


# ----------------------------------------------------------------------------- Hugging Face files
# Written by transformers' own Dinov2Model / IJepaModel (random weights, save_pretrained, no
# download) and compared with their outputs, at the native size and at other sizes.

RAD_DINO_MEAN, RAD_DINO_STD = [0.5307, 0.5307, 0.5307], [0.2583, 0.2583, 0.2583]


def _hf_input(x: torch.Tensor, mean, std) -> torch.Tensor:
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (x.repeat(1, 3, 1, 1) - m) / s


@pytest.fixture(scope="module")
def hf_dinov2(tmp_path_factory: pytest.TempPathFactory):
    """A small Dinov2Model with Rad-DINO's grid (518 px, 14 px patches: 37 x 37) and its
    preprocessor statistics, saved the way Rad-DINO's release is (a Hugging Face folder)."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tf.Dinov2Model(tf.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        image_size=518, patch_size=14, layerscale_value=0.5)).eval()
    with torch.no_grad():  # non-trivial CLS, positions and layer scales
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("rad-dino")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": RAD_DINO_MEAN, "image_std": RAD_DINO_STD, "crop_size": {"height": 518}}))
    return model, folder / "model.safetensors"


@pytest.mark.parametrize("hw", [(518, 518), (224, 224), (224, 168)])
def test_hf_dinov2_file_matches_hf_dinov2_at_every_size(hf_dinov2, hw) -> None:
    model, path = hf_dinov2
    enc = load_encoder(path)
    assert enc.pos_interp == "bicubic" and enc.import_info["input_stats"] == "preprocessor_config.json"
    assert enc.import_info["heads"] == "config.json" and enc.num_heads == 2
    x = torch.rand(2, 1, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(pixel_values=_hf_input(x, RAD_DINO_MEAN, RAD_DINO_STD)).last_hidden_state
        got = enc(x)
        cls, _ = enc.forward_with_prefix(x)
    assert float((got - ref[:, 1:]).abs().max()) < 1e-4
    assert float((cls[:, 0] - ref[:, 0]).abs().max()) < 1e-4
    if hw != (518, 518):  # timm's antialiased resize (what the kit did before) does not match
        enc.pos_interp = "timm"
        with torch.no_grad():
            assert float((enc(x) - ref[:, 1:]).abs().max()) > 1e-3


def test_input_statistics_given_by_hand_win_over_the_preprocessor_file(hf_dinov2) -> None:
    _, path = hf_dinov2
    enc = load_encoder(path, in_mean=(0.5,), in_std=(0.25,))
    assert enc.import_info["input_stats"] == "given"
    torch.testing.assert_close(enc.in_std.flatten(), torch.full((3,), 0.25))
    (path.parent / "elsewhere").mkdir()
    lone = path.parent / "elsewhere" / "model.safetensors"
    lone.write_bytes(path.read_bytes())  # no side files: ImageNet statistics, heads from the table
    enc = load_encoder(lone, num_heads=2)
    assert enc.import_info["input_stats"] == "ImageNet"
    torch.testing.assert_close(enc.in_mean.flatten(), torch.tensor(IMAGENET_MEAN))


def test_a_broken_preprocessor_file_is_named(hf_dinov2, tmp_path: Path) -> None:
    _, path = hf_dinov2
    (tmp_path / "model.safetensors").write_bytes(path.read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5],
                                                                   "image_std": [0.0]}))
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json.*image_std"):
        load_encoder(tmp_path / "model.safetensors")


def test_dinov2_original_keys_resample_like_the_dinov2_repository(tmp_path: Path) -> None:
    m = _timm(6, class_token=True, init_values=1.0)
    path = tmp_path / "dinov2.pth"
    torch.save(m.state_dict(), path)
    enc = load_encoder(path, fmt="dinov2", num_heads=HEADS)
    assert enc.pos_interp == "dinov2"
    grid = enc.pos_embed.reshape(1, GRID, GRID, DIM).permute(0, 3, 1, 2)
    want = F.interpolate(grid, scale_factor=((3 + 0.1) / GRID, (2 + 0.1) / GRID), mode="bicubic",
                         antialias=False)  # DINOv2's interpolate_offset=0.1
    torch.testing.assert_close(enc.pos_embed_for((3, 2)),
                               want.permute(0, 2, 3, 1).reshape(1, 6, DIM))


@pytest.fixture(scope="module")
def hf_ijepa(tmp_path_factory: pytest.TempPathFactory):
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tf.IJepaModel(tf.IJepaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        image_size=64, patch_size=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("ijepa-hf")
    model.save_pretrained(folder)
    return model, folder / "model.safetensors"


@pytest.mark.parametrize("hw", [(64, 64), (48, 48), (64, 40)])
def test_hf_ijepa_file_is_imported_and_matches_hf_ijepa(hf_ijepa, hw) -> None:
    from safetensors.torch import load_file

    model, path = hf_ijepa
    assert detect_format(load_file(str(path))) == "ijepa_hf"  # was taken for DINOv2: KeyError
    enc = load_encoder(path)
    assert enc.num_prefix_tokens == 0 and enc.pos_interp == "bicubic"
    assert enc.norm.eps == 1e-12  # IJepaConfig's layer_norm_eps, from config.json
    x = torch.rand(2, 1, *hw, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(pixel_values=_hf_input(x, IMAGENET_MEAN, IMAGENET_STD),
                    interpolate_pos_encoding=True).last_hidden_state
        assert float((enc(x) - ref).abs().max()) < 1e-4


def test_an_in_memory_hf_ijepa_state_dict_is_imported_too(hf_ijepa, tmp_path: Path) -> None:
    model, _ = hf_ijepa  # transformers >= 5 module names: attention.q_proj, o_proj ...
    path = tmp_path / "ijepa_state.pt"
    torch.save(model.state_dict(), path)
    enc = load_encoder(path, num_heads=2)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ref = model(pixel_values=_hf_input(x, IMAGENET_MEAN, IMAGENET_STD)).last_hidden_state
        assert float((enc(x) - ref).abs().max()) < 1e-4


def test_other_hf_vit_layouts_are_refused_by_name(tmp_path: Path) -> None:
    sd = {"embeddings.cls_token": torch.zeros(1, 1, 8),
          "embeddings.patch_embeddings.projection.weight": torch.zeros(8, 3, 4, 4),
          "encoder.layer.0.layernorm_before.weight": torch.ones(8)}
    torch.save(sd, tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="ViT-style layout with a CLS token"):
        load_encoder(tmp_path / "vit.pt")


def test_kit_checkpoints_refuse_foreign_input_statistics(tmp_path: Path) -> None:
    path = write_kit_checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="carries its own input statistics"):
        load_encoder(path, in_mean=(0.5,))


# ----------------------------------------------------------------------------- shipped DINO / MAE


@pytest.mark.parametrize("objective", ["dino", "mae", "jepa same budget"])
def test_shipped_dino_and_mae_checkpoints_match_their_recipes(objective: str) -> None:
    """The shipped DINO / MAE checkpoints are ``--preset <objective>-gpu-phantom`` (or the
    ``-cpu-long`` or ``-cpu`` preset on a machine without a GPU, with that JEPA run shipped
    beside them; bench/objectives.sh), exported with their training log beside them."""
    path = SHIPPED_CHECKPOINTS.get(objective, SHIPPED_JEPA_SAME_BUDGET)
    objective = objective.split()[0]
    if not path.is_file():
        pytest.skip(f"{path.name} is not shipped: bash bench/objectives.sh makes it"
                    + (" (on the CPU route only)" if path == SHIPPED_JEPA_SAME_BUDGET else ""))
    state = load_checkpoint(path)
    assert path.stat().st_size <= 10 * 2**20
    got = config_to_dict(checkpoint_config(state))
    got.pop("device")
    recipes = {}
    for base in ("gpu-phantom", "cpu-long", "cpu"):
        want = config_to_dict(get_preset(base if objective == "jepa" else f"{objective}-{base}"))
        want.pop("device")
        recipes[base] = want
    assert got in recipes.values(), "the shipped file's config is none of its documented presets"
    assert state["step"] == got["steps"] and "exported" in state
    log = training_log(path)
    assert log.name == f"{path.stem}.metrics.jsonl"
    rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    assert rows[-1]["step"] == got["steps"]


def test_the_shipped_comparison_differs_only_in_the_objective() -> None:
    """Notebook 09 compares three shipped checkpoints of ONE budget: same encoder, data,
    steps x batch and schedules."""
    from radjepa_lab.config import RUNTIME_FIELDS, config_diff

    paths = shipped_checkpoints()
    absent = [p.name for p in paths.values() if not p.is_file()]
    if absent:
        pytest.skip(f"{absent} not shipped yet: bash bench/objectives.sh makes them")
    cfgs = {o: checkpoint_config(load_checkpoint(p)) for o, p in paths.items()}
    for o in ("dino", "mae"):
        diff = {k for k in config_diff(cfgs["jepa"], cfgs[o]) if k not in RUNTIME_FIELDS}
        assert diff == {"objective"}, (o, diff)
