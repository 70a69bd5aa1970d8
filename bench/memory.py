"""Peak memory of `cpu`-preset pretraining, against the 4 GB classroom target and a baseline.

    python bench/memory.py [--preset cpu] [--steps 20] [--target-mib 4096] [--device cpu]

Each measurement runs in a fresh interpreter, so one cannot inherit the other's peak:

* **baseline**: the same encoder + EMA target + predictor doing one bare forward/backward at
  the preset's batch size on random images (no data pipeline, no optimizer state, no monitors)
  -- the least memory this model can train in;
* **pretrain**: ``radjepa_lab.train.pretrain`` for ``--steps`` steps of the preset, phantoms
  generated and cached with the preset's DataLoader workers, checkpoints and monitors on.

Reported: peak RSS of the training process (``ru_maxrss``), of its largest child process (a
DataLoader worker; a forked child starts with its parent's pages), and the process tree's
summed RSS sampled every 50 ms with psutil when it is installed (the ``bench`` extra); shared
pages are counted once per process, so the sum is an upper bound. Exit status 1 when the training process exceeds the target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024  # ru_maxrss is in KiB on Linux


def _child_baseline(preset: str) -> dict[str, float]:
    import torch

    from radjepa_lab.masks import MultiBlockMaskSampler
    from radjepa_lab.models import apply_masks, build_encoder, build_predictor, predict_targets
    from radjepa_lab.presets import get_preset
    from radjepa_lab.train import jepa_loss

    cfg = get_preset(preset)
    m = cfg.model
    enc, pred = build_encoder(m, seed=0), build_predictor(m, seed=0)
    target = build_encoder(m, seed=0).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(cfg.batch_size, m.in_chans, m.img_size, m.img_size, generator=g)
    mb = MultiBlockMaskSampler(m.grid, cfg.masks).sample(cfg.batch_size, g)
    with torch.no_grad():
        h = apply_masks(target(imgs), mb.targets)
    loss = jepa_loss(predict_targets(enc, pred, imgs, mb.context, mb.targets), h, cfg.loss)
    loss.backward()
    return {"loss": float(loss.detach())}


def _child_pretrain(preset: str, steps: int, device: str) -> dict[str, float]:
    from radjepa_lab.config import with_steps
    from radjepa_lab.presets import get_preset
    from radjepa_lab.train import pretrain

    cfg = with_steps(get_preset(preset), steps)
    cfg.device = device
    cfg.log_every = max(1, min(cfg.log_every, steps))
    cfg.ckpt_every = max(1, steps // 2)
    with tempfile.TemporaryDirectory() as out:
        res = pretrain(cfg, Path(out), progress=False)
    return {"steps_done": res.steps_done, "n_train": cfg.n_train, "workers": cfg.num_workers,
            "final_loss": res.history[-1]["loss"]}


def _child(kind: str, preset: str, steps: int, device: str) -> None:
    t0 = time.perf_counter()
    info = (_child_baseline(preset) if kind == "baseline"
            else _child_pretrain(preset, steps, device))
    info["seconds"] = time.perf_counter() - t0
    info["self_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB
    info["worker_peak_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / MIB
    print("RESULT " + json.dumps(info), flush=True)


def _measure(kind: str, preset: str, steps: int, device: str) -> dict[str, float]:
    """Run one child; sample the process tree's RSS while it runs (psutil, if installed)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, __file__, "--child", kind, "--preset", preset, "--steps", str(steps),
           "--device", device]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    tree_peak = 0.0
    try:
        import psutil

        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in procs) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)
    except ImportError:
        tree_peak = float("nan")
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed (exit {proc.returncode})")
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    info = json.loads(line[len("RESULT "):])
    info["tree_peak_mib"] = tree_peak
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--target-mib", type=float, default=4096.0)
    ap.add_argument("--device", default="cpu", help="the classroom case is a CPU-only laptop")
    ap.add_argument("--child", choices=["baseline", "pretrain"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child, a.preset, a.steps, a.device)
        return 0
    base = _measure("baseline", a.preset, a.steps, a.device)
    run = _measure("pretrain", a.preset, a.steps, a.device)
    peak = run["self_peak_mib"]
    print(f"memory bench, preset={a.preset}, device={a.device}, {run['steps_done']} steps, "
          f"n_train={run['n_train']}, {run['workers']} DataLoader workers, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '2')}")
    print(f"  baseline (bare fwd/bwd, same model)  peak RSS {base['self_peak_mib']:8.0f} MiB")
    print(f"  pretrain: training process           peak RSS {peak:8.0f} MiB "
          f"({peak / base['self_peak_mib']:.2f}x baseline)")
    print(f"  pretrain: largest child process      peak RSS {run['worker_peak_mib']:8.0f} MiB")
    print(f"  pretrain: process tree (sampled sum) peak RSS {run['tree_peak_mib']:8.0f} MiB "
          "(upper bound: shared pages counted per process)")
    verdict = "within" if peak <= a.target_mib else "OVER"
    print(f"  target {a.target_mib:.0f} MiB: training process uses {peak / a.target_mib:.0%} "
          f"-> {verdict} target")
    return 0 if peak <= a.target_mib else 1


if __name__ == "__main__":
    raise SystemExit(main())
