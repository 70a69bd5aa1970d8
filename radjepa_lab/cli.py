"""Command-line entry point: `radjepa-lab <subcommand>`.

Only argument parsing lives here; every subcommand calls one library function,
so what the CLI does is exactly what a notebook cell can do.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radjepa_lab.errors import RadJEPALabError


def _cmd_make_phantoms(a: argparse.Namespace) -> int:
    from radjepa_lab.data.phantom import write_phantoms

    out = write_phantoms(a.n, a.size, Path(a.out), seed=a.seed)
    print(f"wrote {a.n} SYNTHETIC phantoms ({a.size} px) to {out}")
    return 0


def apply_overrides(cfg: Any, items: Sequence[str]) -> Any:
    """Apply ``key=value`` overrides (dotted keys reach nested configs), parsing values as Python
    literals where possible, so every preset knob is reachable from the command line (nanoGPT style)."""
    from radjepa_lab.errors import ConfigError

    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=5e-4")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        target, *rest = key.split(".")[::-1]
        obj = cfg
        for part in reversed(rest):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigError(f"--set {item!r}: config has no section {part!r}")
        if not hasattr(obj, target):
            raise ConfigError(f"--set {item!r}: {type(obj).__name__} has no field {target!r}")
        if isinstance(getattr(obj, target), tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(obj, target, value)
    _revalidate(cfg)
    return cfg


def with_steps(cfg: Any, steps: int | None) -> Any:
    """``--steps N``: shorten (or lengthen) a preset; the warmup is capped at N so a short
    trial run of a long preset stays a valid config instead of failing validation."""
    if steps is not None:
        cfg.steps = steps
        cfg.warmup = min(cfg.warmup, steps)
        _revalidate(cfg)
    return cfg


def _revalidate(cfg: Any) -> None:
    """Re-run every nested dataclass's checks, so ``--set model.patch_init=bogus`` fails now."""
    import dataclasses

    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        _revalidate(getattr(cfg, f.name))
    if hasattr(cfg, "__post_init__"):
        cfg.__post_init__()


def _cmd_pretrain(a: argparse.Namespace) -> int:
    from radjepa_lab.config import get_preset
    from radjepa_lab.train import pretrain

    cfg = with_steps(apply_overrides(get_preset(a.preset), a.set or []), a.steps)
    if a.data != "phantoms":
        cfg.data = a.data
    res = pretrain(cfg, Path(a.out), resume=a.resume, progress=not a.no_progress)
    print(f"checkpoint: {res.checkpoint}")
    print(f"metrics:    {Path(a.out) / 'metrics.jsonl'}")
    return 0


def _cmd_embed(a: argparse.Namespace) -> int:
    from radjepa_lab.analysis.embed import embed_to_file

    out = embed_to_file(Path(a.checkpoint), a.data, Path(a.out), pool=a.pool, size=a.size)
    print(f"embeddings: {out}")
    return 0


def _cmd_probe(a: argparse.Namespace) -> int:
    from radjepa_lab.analysis.report import probe_report

    out = probe_report(Path(a.checkpoint), a.data, Path(a.out), n_train=a.n_train,
                       n_test=a.n_test, seed=a.seed)
    print(f"report: {out}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from radjepa_lab.demo import run_demo

    report = run_demo(Path(a.out), profile=a.profile)
    print(f"demo report: {report}")
    return 0


# Spelled out, not built from config.PRESETS: importing config imports torch, which would slow
# every command's start-up and --help. tests/test_cli.py checks it names every preset.
PRESET_HELP = "smoke | cpu | cpu-p8 | cpu-long | gpu-phantom | gpu-short | radjepa-b14"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; exposed so tests and docs can introspect it."""
    p = argparse.ArgumentParser(prog="radjepa-lab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("make-phantoms", help="write SYNTHETIC chest X-ray phantoms to a folder")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_make_phantoms)

    s = sub.add_parser("pretrain", help="I-JEPA pretraining with a named preset")
    s.add_argument("--preset", default="cpu", help=PRESET_HELP)
    s.add_argument("--data", default="phantoms", help="'phantoms' or a folder / CSV manifest")
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config field, e.g. --set lr=5e-4 --set model.depth=4")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_pretrain)

    s = sub.add_parser("embed", help="extract image embeddings from a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("data", help="'phantoms[:N]' or a folder / CSV manifest")
    s.add_argument("--out", required=True)
    s.add_argument("--pool", default="mean", help="mean | 2x2")
    s.add_argument("--size", type=int, default=None, help="image size (default: the checkpoint's)")
    s.set_defaults(func=_cmd_embed)

    s = sub.add_parser("probe", help="probe a checkpoint against random init; writes a report")
    s.add_argument("checkpoint")
    s.add_argument("--data", default="phantoms")
    s.add_argument("--out", required=True)
    s.add_argument("--n-train", type=int, default=1500)
    s.add_argument("--n-test", type=int, default=500)
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=_cmd_probe)

    s = sub.add_parser("demo", help="phantoms -> pretrain -> embed -> probe -> report")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--profile", default=None, help="auto | smoke | cpu | gpu-short")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; kit errors become a one-line message and exit code 2, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RadJEPALabError as exc:
        print(f"radjepa-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
