"""Hostile and broken checkpoints: NaN/Inf weights, missing tensors or entries, a config that
asks for a model far larger than its weights, a resumed checkpoint of another architecture.
Each is refused with a CheckpointError naming the file and the tensor or field, before any
network is built from untrusted sizes; loading stays ``weights_only=True``."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
from guards import reset_peak_rss, vm_kib
from helpers import blob_images, tiny_config, write_kit_checkpoint

import radjepa_lab.checkpoints.kit as ckpts  # where the loaders build networks
from radjepa_lab.checkpoints import load_checkpoint, load_encoder, load_jepa, save_checkpoint
from radjepa_lab.errors import CheckpointError
from radjepa_lab.train import pretrain

# which loaders read which network of a kit checkpoint
READERS = {
    "encoder": {"load_jepa": load_jepa,
                "load_encoder(context)": lambda p: load_encoder(p, which="context")},
    "target_encoder": {"load_jepa": load_jepa, "load_encoder": load_encoder},
    "predictor": {"load_jepa": load_jepa},
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = write_kit_checkpoint(tmp_path_factory.mktemp("good") / "checkpoint.pt")
    return load_checkpoint(path)


def _edited(tmp_path: Path, state: dict, edit) -> Path:
    s = copy.deepcopy(state)
    edit(s)
    return save_checkpoint(tmp_path / "edited.pt", s)


def _refused(path: Path, key: str, *patterns: str) -> None:
    for what, load in READERS[key].items():
        with pytest.raises(CheckpointError) as info:
            load(path)
        msg = str(info.value)
        assert str(path) in msg and all(p in msg for p in patterns), (what, msg)


@pytest.mark.parametrize("key", list(READERS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_naming_the_tensor(tmp_path: Path, good: dict, key: str,
                                                          bad: float) -> None:
    name = "blocks.0.attn.qkv.weight"

    def poison(s: dict) -> None:
        s[key][name][0, 0] = bad

    _refused(_edited(tmp_path, good, poison), key, f"{key}.{name}", "NaN/Inf")


def test_missing_tensor_and_missing_entry_are_refused(tmp_path: Path, good: dict) -> None:
    path = _edited(tmp_path, good, lambda s: s["target_encoder"].pop("blocks.1.norm1.weight"))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.norm1\.weight"):
        load_jepa(path)
    path = _edited(tmp_path, good, lambda s: s["target_encoder"].pop("pos_embed"))
    with pytest.raises(CheckpointError, match=r"target_encoder\.pos_embed is missing"):
        load_jepa(path)
    path = _edited(tmp_path, good, lambda s: s.pop("predictor"))
    with pytest.raises(CheckpointError, match=r"no 'predictor' weights"):
        load_jepa(path)
    path = _edited(tmp_path, good, lambda s: s["target_encoder"].pop("blocks.0.mlp.fc2.bias"))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.mlp\.fc2\.bias"):
        load_encoder(path)


HOSTILE = {  # stored config edits that would build a network far larger than the weights
    "huge grid": ("target_encoder", {"img_size": 8192, "patch_size": 1}),  # 67M positions
    "wide": ("target_encoder", {"embed_dim": 65536, "num_heads": 1}),
    "deep": ("target_encoder", {"depth": 100_000}),
    "huge mlp": ("target_encoder", {"mlp_ratio": 4096.0}),
    "wide predictor": ("predictor", {"pred_embed_dim": 65536, "pred_num_heads": 1}),
    "deep predictor": ("predictor", {"pred_depth": 100_000}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_config_larger_than_its_weights_is_refused_before_building(
        tmp_path: Path, good: dict, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key, edit = HOSTILE[name]
    path = _edited(tmp_path, good, lambda s: s["config"]["model"].update(edit))
    built = []
    for fn in ("build_encoder", "build_predictor"):
        real = getattr(ckpts, fn)
        monkeypatch.setattr(ckpts, fn, lambda *a, _r=real, **k: built.append(1) or _r(*a, **k))
    reset_peak_rss()
    before, t0 = vm_kib("VmRSS"), time.perf_counter()
    _refused(path, key, "config")
    assert built == [], "a network was built before the weights were checked"
    assert time.perf_counter() - t0 < 10
    assert (vm_kib("VmHWM") - before) / 1024 < 200  # MiB; the refused models need GiBs


def test_foreign_file_with_a_far_block_index_is_refused_before_building(tmp_path: Path,
                                                                        good: dict) -> None:
    sd = {f"module.{k}": v for k, v in good["target_encoder"].items()}
    sd["module.blocks.100000.norm1.weight"] = torch.ones(32)
    torch.save({"encoder": sd, "target_encoder": sd}, tmp_path / "ijepa.pth.tar")
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"blocks \[2, 3, 4, 5, 6\] are missing"):
        load_encoder(tmp_path / "ijepa.pth.tar", fmt="ijepa")
    assert time.perf_counter() - t0 < 10
    sd.pop("module.blocks.100000.norm1.weight")
    sd["module.norm.weight"] = torch.full((32,), float("nan"))
    torch.save({"encoder": sd, "target_encoder": sd}, tmp_path / "ijepa.pth.tar")
    with pytest.raises(CheckpointError, match=r"norm\.weight holds NaN/Inf"):
        load_encoder(tmp_path / "ijepa.pth.tar", fmt="ijepa")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    pretrain(tiny_config(steps=4, ckpt_every=2), out, dataset=blob_images(16), progress=False,
             max_steps=2)
    return out


def test_resume_into_another_architecture_is_refused(tmp_path: Path, tiny_run: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = tiny_config(steps=4, ckpt_every=2)
    cfg.model.depth = 3
    with pytest.raises(CheckpointError, match=r"another model \(model\.depth 2 -> 3\)"):
        pretrain(cfg, run, dataset=blob_images(16), progress=False, resume=True)


@pytest.mark.parametrize("edit, pattern", [
    (lambda s: s["encoder"].__setitem__("norm.weight", torch.full((32,), float("nan"))),
     r"encoder\.norm\.weight holds NaN/Inf"),
    (lambda s: s["predictor"].pop("proj.bias"), r"proj\.bias"),
    (lambda s: s.pop("optimizer"), r"missing \['optimizer'\]"),
    (lambda s: s.pop("rng"), r"missing \['rng'\]"),
])
def test_resume_refuses_a_broken_checkpoint(tmp_path: Path, tiny_run: Path, edit,
                                            pattern: str) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = load_checkpoint(run / "checkpoint.pt")
    edit(state)
    save_checkpoint(run / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match=pattern) as info:
        pretrain(tiny_config(steps=4, ckpt_every=2), run, dataset=blob_images(16),
                 progress=False, resume=True)
    assert str(run / "checkpoint.pt") in str(info.value)
