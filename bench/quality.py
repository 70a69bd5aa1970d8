"""Quality benchmark: does the kit's JEPA encoder beat random init and raw pixels?

Encoders, all probed on held-out phantoms generated from a seed that pretraining never used:
  * the kit encoder: ``--checkpoint PATH`` (e.g. the shipped one) or a fresh run of a preset
    (``--preset cpu``, optionally ``--steps N``), trained here through ``train.pretrain``;
  * random init of the same architecture with the kit's init AND PyTorch's default init;
    the stronger of the two is the baseline every paired delta is measured against;
  * raw pixels (the image average-pooled to 16x16).
Features: every pooling in ``--pools`` (``mean``, ``2x2``, ``2x2+mid`` = 2x2 of the final and
a middle block, concatenated).

Reported: per-finding and macro AUPRC with bootstrap 95% CIs, the paired-bootstrap delta vs
the stronger random init (CI and p), kNN accuracy, Dice per structure of a linear
segmentation head, retrieval finding-F1 / ROUGE-L / BLEU-4, and RankMe at the start and end
of pretraining (from metrics.jsonl). A table goes to stdout, everything to ``OUT/quality.json``.

Examples:
  python bench/quality.py --preset cpu --out runs/bench_quality            # ~3 min train + probe
  python bench/quality.py --checkpoint data/checkpoints/radjepa_lab_phantom.pt
  python bench/quality.py --preset smoke --n-train 300 --n-test 200 --n-resamples 200 --quick
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EVAL_SEED_OFFSET = 10_000  # eval phantoms use seeds far from pretraining's (seed, i) streams


def _rankme_history(metrics: Path) -> dict[str, Any]:
    if not metrics.exists():
        return {}
    hist = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    rk = [(h.get("step"), h["rankme"]) for h in hist if h.get("rankme") is not None]
    loss = [h["loss"] for h in hist if h.get("loss") is not None]
    if not rk:
        return {}
    i_min = min(range(len(rk)), key=lambda i: rk[i][1])
    out: dict[str, Any] = {
        "rankme_start": rk[0][1],
        "rankme_end": rk[-1][1],
        "rankme_min": rk[i_min][1],
        "rankme_min_step": rk[i_min][0],
        "rankme_steps": [rk[0][0], rk[-1][0]],
        "loss_start": loss[0] if loss else None,
        "loss_end": loss[-1] if loss else None,
        "steps_logged": hist[-1].get("step"),
    }
    # Where does a dip come from? The RankMe of the spectrum after its k leading directions
    # (train.rankme_split): steady while only the leading directions grow, falling on collapse.
    from radjepa_lab.train import TAIL_KEY, TOP_SHARE_KEY

    tail = [(h.get("step"), h[TAIL_KEY], h[TOP_SHARE_KEY]) for h in hist
            if h.get(TAIL_KEY) is not None]
    if tail:
        out.update({
            f"{TAIL_KEY}_start": tail[0][1], f"{TAIL_KEY}_end": tail[-1][1],
            f"{TAIL_KEY}_min": min(t for _, t, _ in tail),
            f"{TAIL_KEY}_at_rankme_min": next(
                (t for st, t, _ in tail if st == out["rankme_min_step"]), None),
            f"{TOP_SHARE_KEY}_start": tail[0][2], f"{TOP_SHARE_KEY}_end": tail[-1][2],
            f"{TOP_SHARE_KEY}_max": max(v for _, _, v in tail),
        })
    return out


def _f(v: float | None, spec: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="kit checkpoint to evaluate (skips pretraining)")
    src.add_argument("--preset", default="cpu", help="pretrain this preset first (default cpu)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for pretraining (as radjepa-lab pretrain --set)")
    p.add_argument("--out", default="runs/bench_quality")
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--seed", type=int, default=0, help="probe/bootstrap seed")
    p.add_argument("--pools", default="mean,2x2,2x2+mid")
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--seg-epochs", type=int, default=30)
    p.add_argument("--no-seg", action="store_true")
    p.add_argument("--no-retrieval", action="store_true")
    p.add_argument("--quick", action="store_true", help="linear probe only, one pooling")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    from radjepa_lab.analysis.baselines import evaluate_suite, phantom_eval_data, random_encoder
    from radjepa_lab.analysis.report import comparison_table, markdown_table, suite_to_json
    from radjepa_lab.config import get_preset
    from radjepa_lab.notebook import load_jepa

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_s = None
    if a.checkpoint:
        ckpt = Path(a.checkpoint)
    else:
        from radjepa_lab.cli import apply_overrides, with_steps
        from radjepa_lab.train import pretrain

        cfg = with_steps(apply_overrides(get_preset(a.preset), a.set), a.steps)
        print(f"pretraining preset {a.preset!r} for {cfg.steps} steps -> {out / 'pretrain'}")
        res = pretrain(cfg, out / "pretrain", progress=not a.no_progress)
        ckpt = res.checkpoint
        train_s = time.perf_counter() - t0
    jepa = load_jepa(ckpt)
    cfg = jepa.config
    if EVAL_SEED_OFFSET + a.seed == cfg.seed:
        raise SystemExit("evaluation seed equals the pretraining seed; pick another --seed")
    pools = ["2x2"] if a.quick else [s.strip() for s in a.pools.split(",") if s.strip()]
    ev = phantom_eval_data(a.n_train, a.n_test, seed=EVAL_SEED_OFFSET + a.seed,
                           size=cfg.model.img_size, phantom_size=cfg.phantom_px)
    # random inits use the run's own seed: "random-kit" is then exactly the JEPA encoder's
    # weights before training, so its delta answers "did pretraining help?"
    encoders = {
        "jepa": jepa.target_encoder,
        "random-kit": random_encoder(cfg.model, "kit", seed=cfg.seed),
        "random-torch": random_encoder(cfg.model, "torch_default", seed=cfg.seed),
    }
    t1 = time.perf_counter()
    suite = evaluate_suite(
        encoders, ev, pools=pools, baseline=["random-kit", "random-torch"],
        probes=("linear",) if a.quick else ("linear", "knn"),
        segmentation=not a.no_seg, retrieval=not a.no_retrieval,
        n_resamples=a.n_resamples, seed=a.seed, seg_epochs=a.seg_epochs, device=a.device,
        progress=not a.no_progress,
    )
    probe_s = time.perf_counter() - t1
    rk = _rankme_history(Path(ckpt).parent / "metrics.jsonl")

    # ---------------------------------------------------------------- print the tables
    lin = [r for r in suite.rows if r.probe == "linear"]
    print(f"\nSYNTHETIC phantoms: {a.n_train} train / {a.n_test} test at {cfg.model.img_size} px "
          f"(eval seed {EVAL_SEED_OFFSET + a.seed}); checkpoint {ckpt} (step {jepa.info.get('step')})")
    print("\nLinear probe, macro AUPRC [95% CI], paired Δ vs the stronger random init")
    print(markdown_table(comparison_table(suite.rows)))
    print("Per-finding AUPRC (linear probe)")
    print(markdown_table([{"features": r.name, **r.auprc} for r in lin]))
    if suite.dice:
        print("Segmentation probe Dice")
        print(markdown_table([{"encoder": k, **v} for k, v in suite.dice.items()]))
    if suite.retrieval:
        print("Report retrieval")
        print(markdown_table([{"encoder": k, "finding F1 macro": v.finding_f1.get("macro"),
                               "finding F1 micro": v.finding_f1.get("micro"),
                               "ROUGE-L": v.rouge_l, "BLEU-4": v.bleu4}
                              for k, v in suite.retrieval.items()]))
    if rk:
        print(f"RankMe (pretraining monitor): start {rk['rankme_start']:.1f} -> end "
              f"{rk['rankme_end']:.1f} (min {rk['rankme_min']:.1f}); loss {_f(rk['loss_start'], '.4f')}"
              f" -> {_f(rk['loss_end'], '.4f')}; lowest at step {rk['rankme_min_step']}")
        from radjepa_lab.train import MONITOR_TOP_K, TAIL_KEY, TOP_SHARE_KEY

        if f"{TAIL_KEY}_start" in rk:
            top, tail = TOP_SHARE_KEY, TAIL_KEY
            print(f"  split after the {MONITOR_TOP_K} leading directions: their share of the "
                  f"spectrum {rk[top + '_start']:.3f} -> max {rk[top + '_max']:.3f} -> "
                  f"{rk[top + '_end']:.3f}; RankMe of the rest {rk[tail + '_start']:.1f}"
                  f" -> min {rk[tail + '_min']:.1f} -> {rk[tail + '_end']:.1f}")

    # ---------------------------------------------------------------- the issue's goals
    goals: dict[str, Any] = {}
    by = {r.name: r for r in lin}
    for pool in pools:
        j = by.get(f"jepa [{pool}]")
        if j is None or j.delta_vs_baseline is None:
            continue
        d = j.delta_vs_baseline
        px = by.get("pixels 16x16")
        base = by[j.baseline]
        goals[pool] = {
            "jepa": j.macro_auprc.estimate,
            "baseline": j.baseline,
            "baseline_auprc": base.macro_auprc.estimate,
            "ratio_vs_baseline": j.macro_auprc.estimate / base.macro_auprc.estimate,
            "delta": d.estimate, "delta_low": d.low, "delta_high": d.high, "p": j.p_value,
            "delta_ge_0.10_and_ci_excludes_0": bool(d.estimate >= 0.10 and d.low > 0),
            "positive_delta": bool(d.estimate > 0),
            "beats_pixels": bool(px is not None and j.macro_auprc.estimate > px.macro_auprc.estimate),
        }
    lung = {}
    if suite.dice:
        for k, v in suite.dice.items():
            lung[k] = float(np.mean([v[s] for s in v if "lung" in s]))
        goals["lung_dice"] = lung
        goals["beats_random_on_lung_dice"] = bool(
            lung["jepa"] > max(lung["random-kit"], lung["random-torch"]))
    if rk:
        goals["rankme_rises"] = bool(rk["rankme_end"] > rk["rankme_start"])
        # "does not fall below its init value": no logged RankMe under the first one.
        from radjepa_lab.train import rankme_dipped

        goals["no_collapse"] = not rankme_dipped(rk["rankme_start"], rk["rankme_min"])
    print("\nGoals (issue 4)")
    for pool in pools:
        g = goals.get(pool)
        if g:
            print(f"  {pool:8s} JEPA {g['jepa']:.3f} vs {g['baseline']} {g['baseline_auprc']:.3f} "
                  f"(ratio {g['ratio_vs_baseline']:.3f}); Δ {g['delta']:+.3f} "
                  f"[{g['delta_low']:+.3f}, {g['delta_high']:+.3f}] p={g['p']:.3f}; "
                  f"≥0.10 & CI>0: {g['delta_ge_0.10_and_ci_excludes_0']}; beats pixels: "
                  f"{g['beats_pixels']}")
    for k in ("beats_random_on_lung_dice", "rankme_rises", "no_collapse"):
        if k in goals:
            print(f"  {k}: {goals[k]}")

    result = {
        "checkpoint": str(ckpt),
        "config": {"preset": None if a.checkpoint else a.preset, "steps": cfg.steps,
                   "img_size": cfg.model.img_size, "phantom_px": cfg.phantom_px},
        "args": vars(a),
        "timing_s": {"pretrain": train_s, "probe": probe_s},
        "pretraining": rk,
        "goals": goals,
        **suite_to_json(suite),
    }
    path = out / "quality.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {path} (pretrain {_f(train_s, '.0f')} s, probes {probe_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
