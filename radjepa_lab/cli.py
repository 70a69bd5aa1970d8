"""Command-line entry point: `radjepa-lab <subcommand>`.

Only argument parsing lives here; every subcommand calls one library function, so what the
CLI does is exactly what a notebook cell can do. Parsing imports no torch (config and presets
are torch-free), so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from radjepa_lab.errors import RadJEPALabError, TrainingInterrupted
from radjepa_lab.presets import PROFILES, preset_help


def _cmd_make_phantoms(a: argparse.Namespace) -> int:
    from radjepa_lab.data.phantom import write_phantoms

    out = write_phantoms(a.n, a.size, Path(a.out), seed=a.seed)
    print(f"wrote {a.n} SYNTHETIC phantoms ({a.size} px) to {out}")
    return 0


def _cmd_pretrain(a: argparse.Namespace) -> int:
    from radjepa_lab.config import apply_overrides, with_steps
    from radjepa_lab.presets import get_preset
    from radjepa_lab.train import pretrain

    cfg = with_steps(apply_overrides(get_preset(a.preset), a.set or []), a.steps)
    if a.data is not None:
        cfg.data = a.data
    # on --resume, what this command spells out counts as an explicit change of the run's config
    allow = {item.partition("=")[0] for item in a.set or []}
    allow |= {"steps", "warmup"} if a.steps is not None else set()  # --steps caps the warmup
    allow |= {"data"} if a.data is not None else set()
    res = pretrain(cfg, Path(a.out), resume=a.resume, progress=not a.no_progress,
                   overwrite=a.overwrite, allow_changes=allow)
    print(f"checkpoint: {res.checkpoint}")
    print(f"metrics:    {Path(a.out) / 'metrics.jsonl'}")
    return 0


def _cmd_embed(a: argparse.Namespace) -> int:
    from radjepa_lab.demo import embed_to_file

    out = embed_to_file(Path(a.checkpoint), a.data, Path(a.out), pool=a.pool, size=a.size,
                        in_mean=a.in_mean, in_std=a.in_std)
    print(f"embeddings: {out}")
    return 0


def _cmd_probe(a: argparse.Namespace) -> int:
    from radjepa_lab.demo import probe_report

    out = probe_report(Path(a.checkpoint), a.data, Path(a.out), n_train=a.n_train,
                       n_test=a.n_test, seed=a.seed, in_mean=a.in_mean, in_std=a.in_std)
    print(f"report: {out}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from radjepa_lab.demo import run_demo

    report = run_demo(Path(a.out), profile=a.profile, minutes=a.minutes)
    print(f"demo report: {report}")
    return 0


def _input_stats(s: argparse.ArgumentParser) -> None:
    """--in-mean / --in-std: an imported encoder's input statistics."""
    for flag, what in (("--in-mean", "mean"), ("--in-std", "std")):
        s.add_argument(flag, type=float, nargs="+", default=None, metavar="X",
                       help=f"input {what} of an imported encoder, 1 or 3 values (default: a "
                            "Hugging Face preprocessor_config.json beside the weights, e.g. "
                            "Rad-DINO's, else ImageNet's); kit checkpoints carry their own")


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

    s = sub.add_parser("pretrain", help="pretraining with a named preset (I-JEPA; dino-* and "
                       "mae-* presets train the contrasting objectives)")
    s.add_argument("--preset", default="cpu", help=preset_help())
    s.add_argument("--data", default=None,
                   help="'phantoms' (the preset's default) or a folder / CSV manifest")
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config field, e.g. --set lr=5e-4 --set model.depth=4")
    s.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (repeat the run's options; each option "
                        "that changes its config must be given again explicitly)")
    s.add_argument("--overwrite", action="store_true",
                   help="start afresh in an OUT that already holds a run (deletes it)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_pretrain)

    s = sub.add_parser("embed", help="extract image embeddings from a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("data", help="'phantoms[:N]' or a folder / CSV manifest")
    s.add_argument("--out", required=True)
    s.add_argument("--pool", default="mean", help="mean | 2x2")
    s.add_argument("--size", type=int, default=None, help="image size (default: the checkpoint's)")
    _input_stats(s)
    s.set_defaults(func=_cmd_embed)

    s = sub.add_parser("probe", help="probe a checkpoint against random init; writes a report")
    s.add_argument("checkpoint")
    s.add_argument("--data", default="phantoms")
    s.add_argument("--out", required=True)
    s.add_argument("--n-train", type=int, default=None, help="default: the demo's probe size")
    s.add_argument("--n-test", type=int, default=None, help="default: the demo's test size")
    s.add_argument("--seed", type=int, default=0)
    _input_stats(s)
    s.set_defaults(func=_cmd_probe)

    s = sub.add_parser("demo", help="phantoms -> pretrain -> embed -> probe -> report")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--profile", default=None, help=" | ".join(PROFILES))
    s.add_argument("--minutes", type=float, default=None,
                   help="pretraining budget on a CPU: the preset's steps are fitted to this many "
                        "minutes of this machine (default: the profile's, 5 for cpu; 0: the "
                        "preset's own steps)")
    s.set_defaults(func=_cmd_demo)
    return p


def _resume_command(argv: Sequence[str]) -> str:
    """The command that continues an interrupted ``pretrain`` (same options, plus --resume)."""
    args = [x for x in argv if x != "--overwrite"]
    return shlex.join(["radjepa-lab", *args, *([] if "--resume" in args else ["--resume"])])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; kit errors become a one-line message and exit code 2, not a traceback. An
    interrupted ``pretrain`` (Ctrl-C, SIGTERM) says where it saved and how to resume, and exits
    128 + the signal number (130, 143) as shells expect."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as exc:
        msg = str(exc).split("; resume with")[0]
        if exc.checkpoint is not None:
            msg += f"; resume with `{_resume_command(argv)}`"
        print(f"radjepa-lab {args.command}: {msg}", file=sys.stderr)
        return 128 + exc.signum
    except RadJEPALabError as exc:
        print(f"radjepa-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
