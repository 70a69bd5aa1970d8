"""Command-line parsing: each subcommand reaches its library function, and kit errors become
one line and exit code 2, not a traceback (config overrides: test_config; preset help:
test_presets)."""

from __future__ import annotations

import csv

import pytest

from radjepa_lab.cli import build_parser, main


def test_every_subcommand_parses_to_its_handler() -> None:
    p = build_parser()
    cases = {
        "make-phantoms": ["--out", "x"],
        "pretrain": ["--out", "x", "--set", "lr=1e-4", "--set", "model.depth=4"],
        "embed": ["ckpt.pt", "phantoms:4", "--out", "x"],
        "probe": ["ckpt.pt", "--out", "x"],
        "demo": [],
    }
    handlers = set()
    for cmd, rest in cases.items():
        a = p.parse_args([cmd, *rest])
        assert a.command == cmd and callable(a.func)
        handlers.add(a.func)
    assert len(handlers) == len(cases)
    a = p.parse_args(["pretrain", *cases["pretrain"]])
    assert a.set == ["lr=1e-4", "model.depth=4"] and a.preset == "cpu" and a.steps is None
    with pytest.raises(SystemExit):
        p.parse_args(["pretrain"])  # --out is required


def test_make_phantoms_writes_the_sample(tmp_path, capsys) -> None:
    out = tmp_path / "ph"
    assert main(["make-phantoms", "--n", "3", "--size", "32", "--out", str(out)]) == 0
    with open(out / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["synthetic"] == "SYNTHETIC" for r in rows)
    assert "wrote 3 SYNTHETIC phantoms" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "Unknown preset"),
    (["--set", "lrr=1"], "no field 'lrr'"),
    (["--set", "model.patch_size=7"], "patch_size"),
])
def test_kit_errors_exit_2_with_one_line(tmp_path, capsys, argv, message) -> None:
    assert main(["pretrain", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("radjepa-lab pretrain: error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before any training


def test_embed_and_probe_carry_an_imported_encoders_input_statistics(tmp_path, capsys) -> None:
    """Rad-DINO's own mean/std reach `radjepa-lab embed` and `probe` (not only the Python API)."""
    import numpy as np
    import torch
    from helpers import write_kit_checkpoint
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    a = build_parser().parse_args(["probe", "c.pt", "--out", "x", "--in-mean", "0.53",
                                   "--in-std", "0.26", "0.26", "0.26"])
    assert a.in_mean == [0.53] and a.in_std == [0.26, 0.26, 0.26]
    vit = TimmViT(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=1, num_heads=2,
                  num_classes=0, global_pool="", class_token=False)
    torch.save({"encoder": vit.state_dict()}, tmp_path / "enc.pth")
    assert main(["embed", str(tmp_path / "enc.pth"), "phantoms:4", "--out", str(tmp_path / "e"),
                 "--in-mean", "0.53", "--in-std", "0.26"]) == 0
    with np.load(tmp_path / "e" / "embeddings.npz") as z:
        np.testing.assert_allclose(z["in_mean"], [0.53] * 3, rtol=1e-6)
        np.testing.assert_allclose(z["in_std"], [0.26] * 3, rtol=1e-6)
    kit = write_kit_checkpoint(tmp_path / "kit.pt")
    assert main(["embed", str(kit), "phantoms:4", "--out", str(tmp_path / "k"),
                 "--in-mean", "0.5"]) == 2
    assert "carries its own input statistics" in capsys.readouterr().err
