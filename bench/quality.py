"""Quality benchmark: does a kit encoder beat random init and raw pixels? The demo's protocol.

It runs exactly what ``make demo`` runs after pretraining (``radjepa_lab.demo``:
``evaluate_checkpoints`` with the profile's probe sizes, held-out phantoms from seeds that
pretraining never uses, the stronger random init of each model's own architecture, raw
pixels, paired bootstrap CIs), so a figure here is the figure a user's demo report shows.

Models: ``--checkpoint PATH`` (repeatable; e.g. the shipped one; ``--name`` gives each a name)
and/or ``--preset NAME`` (pretrained here through ``train.pretrain``, with ``--steps`` / ``--set``
overrides; a dino-* / mae-* preset trains that objective). Printed: the lead table (macro
AUPRC, paired Δ vs the stronger random init and vs pixels), per-finding AUPRC, kNN, Dice,
retrieval, the RankMe history, and the timings; with several models also the objectives table
(one row per model: AUPRC, Δ vs random init, lung Dice, RankMe, images/s) and every pair's paired
Δ, the README's comparison of I-JEPA, DINO and MAE. ``OUT/quality.json`` holds everything.

Examples:
  python bench/quality.py --preset cpu                       # the demo's own run and probe
  python bench/quality.py --checkpoint data/checkpoints/radjepa_lab_phantom.pt
  python bench/quality.py --preset smoke --profile smoke     # seconds, for tests
  bash bench/objectives.sh                                   # I-JEPA vs DINO vs MAE (README)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", default=[],
                   help="kit checkpoint to evaluate (repeatable)")
    p.add_argument("--name", action="append", default=[],
                   help="a name for each --checkpoint, in the same order (default: checkpoint N)")
    p.add_argument("--preset", default=None, help="pretrain this preset first")
    p.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--minutes", type=float, default=None,
                   help="fit the preset's steps to this many minutes of this CPU, as the demo "
                        "does (budget.fit_to_minutes; after --set, instead of --steps)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for pretraining (as radjepa-lab pretrain --set)")
    p.add_argument("--profile", default="cpu", help="whose probe sizes to use (default cpu, "
                   "the demo's on a laptop)")
    p.add_argument("--out", default="runs/bench_quality")
    p.add_argument("--seed", type=int, default=0, help="probe/bootstrap seed")
    p.add_argument("--no-seg", action="store_true")
    p.add_argument("--no-retrieval", action="store_true")
    p.add_argument("--quick", action="store_true", help="linear probe only, no seg/retrieval")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not a.checkpoint and not a.preset:
        a.preset = "cpu"

    from radjepa_lab.config import apply_overrides, with_steps
    from radjepa_lab.demo import (
        evaluate_checkpoints,
        lead_rows,
        load_contender,
        objective_rows,
        pairwise_rows,
        verdict_lines,
        write_evaluation,
    )
    from radjepa_lab.monitors import summarize_history
    from radjepa_lab.presets import get_preset, resolve_profile
    from radjepa_lab.viz.report import comparison_table, markdown_table

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    contenders, train_s = [], None
    if a.name and len(a.name) != len(a.checkpoint):
        p.error(f"give one --name per --checkpoint ({len(a.checkpoint)}), got {len(a.name)}")
    for i, path in enumerate(a.checkpoint):
        name = a.name[i] if a.name else (f"checkpoint {i + 1}" if len(a.checkpoint) > 1
                                          else "checkpoint")
        contenders.append(load_contender(name, path, str(path)))
    if a.preset:
        from radjepa_lab.budget import fit_to_minutes
        from radjepa_lab.train import pretrain

        cfg = with_steps(apply_overrides(get_preset(a.preset), a.set), a.steps)
        t0 = time.perf_counter()
        cfg, _ = fit_to_minutes(cfg, a.minutes)
        print(f"pretraining preset {a.preset!r} for {cfg.steps} steps -> {out / 'pretrain'}")
        res = pretrain(cfg, out / "pretrain", progress=not a.no_progress, overwrite=True)
        train_s = time.perf_counter() - t0
        how = (f"--preset {a.preset}" + "".join(f" --set {s}" for s in a.set)
               + (f" --steps {cfg.steps}" if a.steps or a.minutes else "")
               + (f" (fitted to {a.minutes:g} min)" if a.minutes else "") + f" ({train_s:.0f} s)")
        contenders.append(load_contender(f"preset {a.preset}", res.checkpoint, how))

    quick = a.quick
    ev = evaluate_checkpoints(
        contenders, sizes=resolve_profile(a.profile).probe, seed=a.seed,
        probes=("linear",) if quick else ("linear", "knn"),
        segmentation=not (a.no_seg or quick), retrieval=not (a.no_retrieval or quick),
        device=a.device, progress=not a.no_progress)
    lead = lead_rows(ev)

    print(f"\nSYNTHETIC phantoms: {len(ev.data.train_labels)} probe-train / "
          f"{len(ev.data.test_labels)} test at {ev.data.test_images.shape[-1]} px")
    print(markdown_table(lead))
    lin = [r for r in ev.suite.rows if r.probe == "linear"]
    print("Per-finding AUPRC (linear probe)")
    print(markdown_table([{"features": r.name, **r.auprc} for r in lin]))
    knn = [r for r in ev.suite.rows if r.probe == "knn"]
    if knn:
        print("kNN probe")
        print(markdown_table(comparison_table(knn)))
    if ev.suite.dice:
        print("Segmentation probe Dice")
        print(markdown_table([{"encoder": k, **v} for k, v in ev.suite.dice.items()]))
    if ev.suite.retrieval:
        print("Report retrieval")
        print(markdown_table([{"encoder": k, "finding F1 macro": v.finding_f1.get("macro"),
                               "ROUGE-L": v.rouge_l, "BLEU-4": v.bleu4}
                              for k, v in ev.suite.retrieval.items()]))
    history = {c.name: summarize_history(c.history) for c in ev.contenders}
    for name, h in history.items():
        if h:
            print(f"{name}: RankMe {h['rankme_start']:.1f} -> lowest {h['rankme_min']:.1f} "
                  f"(step {h['rankme_min_step']}) -> {h['rankme_end']:.1f}; never below its "
                  f"first log: {h['no_collapse']}; loss {h['loss_start']:.4f} -> "
                  f"{h['loss_end']:.4f}")
    for line in verdict_lines(ev):
        print(line)
    objectives, pairs = [], []
    if len(contenders) > 1:
        objectives = objective_rows(ev)
        probes = [q for q in ("linear", "knn") if any(r.probe == q for r in ev.suite.rows)]
        pairs = [row for q in probes for row in pairwise_rows(ev, q)]
        print("\nObjectives side by side (one encoder, one budget of images)")
        print(markdown_table(objectives))
        print("Every pair, paired bootstrap Δ macro AUPRC")
        print(markdown_table(pairs))
    write_evaluation(ev, out / "report", "RadJEPA Lab quality benchmark", umap_method="pca")
    result = {"args": vars(a), "timing_s": {"pretrain": train_s, "evaluate": ev.seconds},
              "lead": lead, "history": history, "objectives": objectives, "pairs": pairs,
              **json.loads((out / "report" / "results.json").read_text())}
    path = out / "quality.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {path} (pretrain {train_s or 0:.0f} s, evaluation {ev.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
