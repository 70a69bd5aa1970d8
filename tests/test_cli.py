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
