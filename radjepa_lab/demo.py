"""The application layer: pretrain -> evaluate -> report, as ``make demo``, the CLI and the
benchmarks run it.

It composes the library (``train``, ``analysis``, ``viz``) and nothing below imports it back.

* :func:`evaluate_checkpoints` is the ONE evaluation protocol: held-out phantoms (seeds no
  pretraining uses), the same probe sizes for everyone (``PROFILE_TABLE``'s ``probe`` row),
  every model against the stronger random init of its own architecture and raw pixels, with
  paired bootstrap CIs. ``make demo``, ``radjepa-lab probe`` and ``bench/quality.py`` all call
  it, so a figure in the README is the figure a user gets.
* :func:`run_demo` is ``make demo``: it pretrains the profile's preset, then evaluates the
  shipped checkpoint and that run side by side and writes a report whose first table says
  whether each one learned.
* :func:`probe_report` is ``radjepa-lab probe`` and :func:`embed_to_file` is ``radjepa-lab embed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radjepa_lab.analysis.evaluation import EvalData, SuiteResult
from radjepa_lab.checkpoints import (
    SHIPPED_CHECKPOINT,
    JEPAModels,
    as_jepa,
    load_encoder,
    load_trained,
    training_log,
)
from radjepa_lab.config import ModelConfig, TrainConfig
from radjepa_lab.errors import CheckpointError, RadJEPALabError
from radjepa_lab.monitors import read_metrics, summarize_history
from radjepa_lab.presets import ProbeSizes, resolve_profile
from radjepa_lab.viz.report import ReportSection, comparison_table, write_report

__all__ = [
    "EVAL_SEED",
    "SHIPPED_HOW",
    "Contender",
    "Evaluation",
    "embed_to_file",
    "evaluate_checkpoints",
    "lead_rows",
    "load_contender",
    "objective_rows",
    "pairwise_rows",
    "probe_report",
    "run_cost",
    "run_demo",
    "verdict_lines",
    "write_evaluation",
]

# Held-out phantoms: probe-train from seed EVAL_SEED, test from EVAL_SEED + 1. Pretraining
# draws phantom i of a run from derive_seed(cfg.seed, i) with small seeds, never these.
EVAL_SEED = 10_000
SHIPPED_HOW = ("radjepa-lab pretrain --preset gpu-phantom (8000 steps at batch 128 on one GPU), "
               "then checkpoints.export_checkpoint")
# How the shipped checkpoint of each objective was trained (bench/objectives.sh writes them)
SHIPPED_HOW_BY_OBJECTIVE = {
    "jepa": SHIPPED_HOW,
    **{o: f"radjepa-lab pretrain --preset {o}-gpu-phantom (the JEPA recipe's encoder, data, "
          "steps x batch and schedules), then checkpoints.export_checkpoint; see "
          "bench/objectives.sh" for o in ("dino", "mae")},
}
POOL = "2x2"


# ----------------------------------------------------------------------------- the protocol


@dataclass
class Contender:
    """One model under evaluation: its evaluated encoder (I-JEPA's EMA target, DINO's teacher,
    MAE's encoder) and where it came from."""

    name: str
    path: Path
    encoder: torch.nn.Module
    jepa: JEPAModels | None  # all three networks, for kit I-JEPA checkpoints
    model: ModelConfig
    seed: int
    how: str = ""  # how it was trained (a command), for the report
    history: list[dict[str, Any]] = field(default_factory=list)  # its metrics.jsonl
    objective: str | None = None  # jepa | dino | mae for kit checkpoints, None for imports
    config: TrainConfig | None = None  # a kit checkpoint's run config


def _model_config_like(encoder: Any) -> ModelConfig:
    """A ModelConfig with an imported encoder's shape (for its random baselines)."""
    blk = encoder.blocks[0]
    d, heads = encoder.embed_dim, encoder.num_heads
    return ModelConfig(
        img_size=encoder.pos_grid[0] * encoder.patch_size, patch_size=encoder.patch_size,
        in_chans=encoder.in_chans, embed_dim=d, depth=len(encoder.blocks), num_heads=heads,
        mlp_ratio=blk.mlp.fc1.out_features / d, pred_embed_dim=max(4, (d // 2) // 4 * 4),
        pred_num_heads=heads, qkv_bias=blk.attn.qkv.bias is not None,
    )


def load_contender(name: str, path: str | Path, how: str = "",
                   in_mean: Sequence[float] | None = None,
                   in_std: Sequence[float] | None = None) -> Contender:
    """A kit checkpoint of any objective (its evaluated encoder, config and training log; all
    three networks of an I-JEPA one) or any encoder file
    :func:`radjepa_lab.checkpoints.load_encoder` reads (``in_mean`` / ``in_std``: its input
    statistics, e.g. Rad-DINO's; by default a Hugging Face preprocessor_config.json beside it)."""
    path = Path(path)
    try:
        run = load_trained(path)
    except CheckpointError as e:
        if "not a RadJEPA Lab checkpoint" not in str(e):
            raise
        enc = load_encoder(path, in_mean=in_mean, in_std=in_std).eval()
        return Contender(name, path, enc, None, _model_config_like(enc), 0, how)
    jepa = as_jepa(run) if run.objective == "jepa" else None
    return Contender(name, path, jepa.target_encoder if jepa else run.evaluated, jepa,
                     run.config.model, run.config.seed, how, read_metrics(training_log(path)),
                     run.objective, run.config)


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoints` measured, and on what."""

    contenders: list[Contender]
    data: EvalData
    suite: SuiteResult
    baselines: dict[str, list[str]]  # contender name -> names of its random-init encoders
    sizes: ProbeSizes
    seed: int
    seconds: float

    def row(self, name: str, probe: str = "linear", pool: str = POOL) -> Any:
        """The comparison row of an encoder (``pixels 16x16`` for pixels)."""
        key = name if name.startswith("pixels") else f"{name} [{pool}]"
        return next(r for r in self.suite.rows if r.name == key and r.probe == probe)


def _random_names(c: Contender, shared: bool) -> list[str]:
    tag = "" if shared else f", {c.name}'s architecture"
    return [f"random (kit init{tag})", f"random (torch init{tag})"]


def evaluate_checkpoints(
    contenders: Sequence[Contender],
    data: str = "phantoms",
    sizes: ProbeSizes | None = None,
    seed: int = 0,
    pools: Sequence[str] = (POOL,),
    probes: Sequence[str] = ("linear", "knn"),
    segmentation: bool = True,
    retrieval: bool = True,
    seg_epochs: int = 30,
    device: str = "auto",
    progress: bool = True,
) -> Evaluation:
    """Probe every contender, the random inits of each architecture and raw pixels identically.

    ``data``: ``"phantoms"`` (held-out phantoms from :data:`EVAL_SEED` + 2 * ``seed``, at the
    contenders' phantom size; ``phantoms:N`` sets the total, split 75/25) or a folder / CSV
    manifest with labels (split 75/25; no segmentation or retrieval). ``sizes`` defaults to the
    ``cpu`` profile's probe row (the demo's). Each contender's paired delta is against the
    stronger of the two random inits (kit's and PyTorch's) of its own architecture, seeded
    like the contender's own run, so "random (kit init)" is exactly its weights before training.
    """
    from radjepa_lab.analysis.baselines import random_encoder
    from radjepa_lab.analysis.evaluation import (
        dataset_eval_data,
        evaluate_suite,
        phantom_eval_data,
    )
    from radjepa_lab.data.datasets import phantom_count, resolve_dataset

    if not contenders:
        raise RadJEPALabError("evaluate_checkpoints: nothing to evaluate")
    sizes = sizes or resolve_profile("cpu").probe
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise RadJEPALabError(f"evaluate_checkpoints: contender names must differ, got {names}")
    size = contenders[0].model.img_size
    if any(c.model.img_size != size for c in contenders):
        raise RadJEPALabError(
            "evaluate_checkpoints: every model must take the same input size to share one test "
            f"set; got {[(c.name, c.model.img_size) for c in contenders]}")
    t0 = time.perf_counter()
    n_train, n_test = sizes.n_train, sizes.n_test
    if str(data).startswith("phantoms"):
        n_total = phantom_count(data)
        if n_total:
            n_test = max(1, n_total // 4)
            n_train = n_total - n_test
        px = contenders[0].config.phantom_px if contenders[0].config else size
        ev = phantom_eval_data(n_train, n_test, seed=EVAL_SEED + 2 * seed, size=size,
                               phantom_size=px)
    else:
        ev = dataset_eval_data(resolve_dataset(data, size, seed), size, seed=seed)

    # one pair of random inits per distinct architecture (and seed)
    arch = {c.name: (json.dumps(vars(c.model), sort_keys=True), c.seed) for c in contenders}
    shared = len(set(arch.values())) == 1
    encoders: dict[str, torch.nn.Module] = {c.name: c.encoder for c in contenders}
    baselines: dict[str, list[str]] = {}
    made: dict[Any, list[str]] = {}
    for c in contenders:
        if arch[c.name] not in made:
            kit, torch_default = _random_names(c, shared)
            encoders[kit] = random_encoder(c.model, "kit", seed=c.seed)
            encoders[torch_default] = random_encoder(c.model, "torch_default", seed=c.seed)
            made[arch[c.name]] = [kit, torch_default]
        baselines[c.name] = made[arch[c.name]]
    own = {name: pair for pair in made.values() for name in pair}  # random inits: their own pair
    suite = evaluate_suite(
        encoders, ev, pools=pools,
        baseline={**baselines, **own, "*": baselines[contenders[0].name]},
        probes=probes, segmentation=segmentation, retrieval=retrieval,
        n_resamples=sizes.n_resamples, seed=seed, seg_epochs=seg_epochs, device=device,
        progress=progress,
    )
    return Evaluation(list(contenders), ev, suite, baselines, sizes, seed,
                      time.perf_counter() - t0)


# ----------------------------------------------------------------------------- the report


def _delta(d: Any) -> str:
    return f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" if d is not None else "—"


def verdict(row: Any) -> str:
    """Plain words for a paired delta against the stronger random init."""
    d = row.delta_vs_baseline
    if d is None:
        return "—"
    if d.low > 0:
        return "learned: better than random init"
    if d.high < 0:
        return "worse than random init"
    return "not distinguishable from random init"


def lead_rows(ev: Evaluation, probe: str = "linear") -> list[dict[str, str]]:
    """The first table of every report: each contender, the stronger random init of each
    architecture, and raw pixels, with paired deltas against random init and against pixels."""
    from radjepa_lab.analysis.evaluation import paired_delta

    px = ev.row("pixels 16x16", probe)
    out = []
    for c in ev.contenders:
        r = ev.row(c.name, probe)
        vs_px = paired_delta(ev.suite, ev.data, r.name, px.name, probe, ev.sizes.n_resamples,
                             ev.seed)
        out.append({"model": c.name, "how it was trained": c.how or str(c.path),
                    "macro AUPRC [95% CI]": str(r.macro_auprc),
                    "Δ vs stronger random init [95% CI]": _delta(r.delta_vs_baseline),
                    "p": f"{r.p_value:.3f}" if r.p_value is not None else "",
                    "Δ vs raw pixels [95% CI]": _delta(vs_px), "verdict": verdict(r)})
    shown = set()
    for c in ev.contenders:
        base = ev.row(c.name, probe).baseline
        if base in shown:
            continue
        shown.add(base)
        r = next(x for x in ev.suite.rows if x.name == base and x.probe == probe)
        out.append({"model": f"stronger random init: {base.rsplit(' [', 1)[0]}",
                    "how it was trained": "not trained (same architecture)",
                    "macro AUPRC [95% CI]": str(r.macro_auprc),
                    "Δ vs stronger random init [95% CI]": "—", "p": "",
                    "Δ vs raw pixels [95% CI]": "—", "verdict": "baseline"})
    out.append({"model": "raw pixels 16x16", "how it was trained": "no model: the image, "
                "average-pooled to 16x16", "macro AUPRC [95% CI]": str(px.macro_auprc),
                "Δ vs stronger random init [95% CI]": _delta(px.delta_vs_baseline),
                "p": f"{px.p_value:.3f}" if px.p_value is not None else "",
                "Δ vs raw pixels [95% CI]": "—", "verdict": "baseline"})
    return out


def pairwise_rows(ev: Evaluation, probe: str = "linear") -> list[dict[str, str]]:
    """Every pair of contenders against each other: the paired bootstrap CI of the difference
    in macro AUPRC, on the same resampled test images as every other row."""
    from itertools import combinations

    from radjepa_lab.analysis.evaluation import paired_delta

    out = []
    for a, b in combinations(ev.contenders, 2):
        d = paired_delta(ev.suite, ev.data, ev.row(a.name, probe).name,
                         ev.row(b.name, probe).name, probe, ev.sizes.n_resamples, ev.seed)
        word = (f"{a.name} better" if d.low > 0 else f"{b.name} better" if d.high < 0
                else "not distinguishable")
        out.append({"comparison": f"{a.name} − {b.name}", "probe": probe,
                    "Δ macro AUPRC [95% CI]": _delta(d), "verdict": word})
    return out


def run_cost(c: Contender) -> dict[str, float | None]:
    """What a contender's training cost, from its log: images seen, the median images/s of its
    logging windows (the first, start-up window left out) and the training wall-clock (every
    window's images / its images/s; monitors and checkpoints excluded)."""
    rows = [r for r in c.history if r.get("imgs_per_s") and r.get("step") is not None]
    seen = c.config.steps * c.config.batch_size if c.config else None
    if not rows or c.config is None:
        return {"images_seen": seen, "imgs_per_s": None, "train_s": None}
    steps = [0] + [int(r["step"]) for r in rows]
    total = sum((s1 - s0) * c.config.batch_size / r["imgs_per_s"]
                for s0, s1, r in zip(steps, steps[1:], rows, strict=False))
    ips = sorted(r["imgs_per_s"] for r in rows[1:] or rows)
    return {"images_seen": seen, "imgs_per_s": ips[len(ips) // 2], "train_s": total}


def objective_rows(ev: Evaluation, probe: str = "linear") -> list[dict[str, str]]:
    """The comparison table of notebook 09 and the README: one row per contender with its
    objective, macro AUPRC [CI], Δ vs the stronger random init [CI], lung Dice (mean of both
    lungs), RankMe of its test features, and its training budget (images seen, images/s,
    wall-clock)."""
    out = []
    for c in ev.contenders:
        r = ev.row(c.name, probe)
        dice = ev.suite.dice.get(c.name, {})
        lungs = [dice[k] for k in ("right_lung", "left_lung") if k in dice]
        cost = run_cost(c)
        ips, secs = cost["imgs_per_s"], cost["train_s"]
        out.append({
            "model": c.name, "objective": (c.objective or "imported").upper(),
            "macro AUPRC [95% CI]": str(r.macro_auprc),
            "Δ vs stronger random init [95% CI]": _delta(r.delta_vs_baseline),
            "lung Dice": f"{sum(lungs) / len(lungs):.3f}" if lungs else "—",
            "RankMe (test features)": f"{ev.suite.rankme.get(r.name, float('nan')):.1f}",
            "images seen": f"{cost['images_seen']:,}" if cost["images_seen"] else "—",
            "images/s": f"{ips:.0f}" if ips else "—",
            "training wall-clock": (f"{secs / 60:.1f} min" if secs >= 120 else f"{secs:.0f} s")
            if secs else "—",
        })
    return out


def verdict_lines(ev: Evaluation) -> list[str]:
    """One console line per contender: its gain over random init and over pixels, in words."""
    lines = []
    for row in lead_rows(ev)[: len(ev.contenders)]:
        lines.append(f"{row['model']}: macro AUPRC {row['macro AUPRC [95% CI]']}; "
                     f"Δ vs stronger random init {row['Δ vs stronger random init [95% CI]']} "
                     f"-> {row['verdict']}; Δ vs raw pixels {row['Δ vs raw pixels [95% CI]']}")
    return lines


def _sections(ev: Evaluation, umap_method: str) -> list[ReportSection]:
    """Every diagnostic after the lead table: probes, segmentation, retrieval, RankMe, pictures."""
    from radjepa_lab.analysis.attention import attention_maps
    from radjepa_lab.analysis.embed import project_2d
    from radjepa_lab.analysis.latents import predict_latents
    from radjepa_lab.analysis.metrics import pr_curves
    from radjepa_lab.viz import (
        plot_attention_heads,
        plot_embedding,
        plot_latents,
        plot_pr_curves,
        plot_probe_bars,
        plot_retrieval_table,
        plot_rollout,
        plot_segmentation,
        plot_training_curves,
    )

    d, s = ev.data, ev.suite
    syn = d.synthetic
    lin = [r for r in s.rows if r.probe == "linear"]
    knn = [r for r in s.rows if r.probe == "knn"]
    main = ev.contenders[0]
    sections = [ReportSection(
        "Linear probe (frozen features), every encoder",
        tables=[("Paired bootstrap Δ against each model's stronger random init",
                 comparison_table(lin)),
                ("Per-finding AUPRC (linear probe)",
                 [{"features": r.name, **r.auprc} for r in lin])],
        figures=[("probe_bars", plot_probe_bars(lin, synthetic=syn), "Macro AUPRC with 95% CI"),
                 ("pr_curves", plot_pr_curves(
                     pr_curves(d.test_labels, s.results[(ev.row(main.name).name, "linear")].scores,
                               d.classes),
                     prevalence=dict(zip(d.classes, np.nanmean(d.test_labels, 0), strict=True)),
                     title=f"PR curves of the {main.name}'s linear probe", synthetic=syn), "")],
    )]
    if knn:
        sections.append(ReportSection(
            "kNN probe (DINO protocol: cosine, k=20, T=0.07)",
            "kNN acc is the mean over findings of the accuracy of the kNN vote at 0.5.",
            tables=[("", comparison_table(knn))]))
    if s.dice:
        sec = ReportSection(
            "Segmentation probe (linear 1x1 head on patch tokens)",
            tables=[("Dice per structure", [{"encoder": k, **v} for k, v in s.dice.items()])])
        for c in ev.contenders:
            if c.name in s.seg_pred:
                sec.figures.append((f"segmentation_{c.name}", plot_segmentation(
                    d.test_images[0], s.seg_pred[c.name][0], d.test_masks[0], d.structures,
                    dict(s.dice[c.name]), synthetic=syn), c.name))
        sections.append(sec)
    if s.retrieval:
        rows = [{"encoder": k, "ROUGE-L": v.rouge_l, "BLEU-4": v.bleu4,
                 "finding F1 (macro)": v.finding_f1.get("macro", float("nan")),
                 "finding F1 (micro)": v.finding_f1.get("micro", float("nan"))}
                for k, v in s.retrieval.items()]
        sections.append(ReportSection(
            "Report generation by retrieval (nearest training report)",
            tables=[("", rows)],
            figures=[("retrieval", plot_retrieval_table(s.retrieval[main.name], synthetic=syn),
                      main.name)]))
    runs = []
    for c in ev.contenders:
        h = summarize_history(c.history)
        if h:
            runs.append({"model": c.name, "steps logged": h["steps_logged"],
                         "RankMe first -> lowest -> last":
                         f"{h['rankme_start']:.1f} -> {h['rankme_min']:.1f} -> "
                         f"{h['rankme_end']:.1f}",
                         "never below its first log": h["no_collapse"],
                         "loss first -> last": f"{h['loss_start']:.4f} -> {h['loss_end']:.4f}"})
    pics = ReportSection("Looking inside each model", tables=[("Collapse monitors", runs)]
                         if runs else [])
    for c in ev.contenders:
        feats = s.features[ev.row(c.name).name].test
        proj = project_2d(feats, method=umap_method, seed=ev.seed)
        pics.figures.append((f"embedding_{c.name}", plot_embedding(
            proj, d.test_labels[:, 0], d.classes[0], synthetic=syn,
            title=f"{c.name}: test embeddings"), proj.note or c.name))
        att = attention_maps(c.encoder, d.test_images[0])
        q = (att.grid[0] // 2, att.grid[1] // 4)
        pics.figures.append((f"attention_rollout_{c.name}", plot_rollout(att, q, synthetic=syn),
                             c.name))
        pics.figures.append((f"attention_heads_{c.name}", plot_attention_heads(
            att, q, layers=[len(c.encoder.blocks) - 1], synthetic=syn), c.name))
        if c.jepa is not None:
            lat = predict_latents(c.jepa.encoder, c.jepa.predictor, c.jepa.target_encoder,
                                  d.test_images[0], mask_cfg=c.jepa.config.masks, seed=ev.seed)
            pics.figures.append((f"latents_{c.name}", plot_latents(lat, synthetic=syn),
                                 f"{c.name}: mean cosine(predicted, target) = "
                                 f"{lat.mean_cosine:.3f}"))
        if c.history:
            pics.figures.append((f"training_curves_{c.name}", plot_training_curves(
                c.history, title=f"{c.name}: pretraining"), c.name))
    sections.append(pics)
    return sections


def write_evaluation(ev: Evaluation, out_dir: str | Path, title: str, intro: str = "",
                     umap_method: str = "umap") -> Path:
    """Write the report (lead table first, then every diagnostic) and ``results.json``;
    returns the path of ``index.html``."""
    from radjepa_lab.analysis.evaluation import suite_to_json

    out = Path(out_dir)
    d = ev.data
    about = (f"Data: {'SYNTHETIC phantoms' if d.synthetic else 'your labelled images'}; "
             f"{len(d.train_labels)} probe-train / {len(d.test_labels)} test images at "
             f"{d.test_images.shape[-1]} px (held out from pretraining); linear probe on frozen "
             f"2x2-pooled features; {ev.sizes.n_resamples} paired bootstrap resamples.")
    lead = ReportSection("Does it learn? Each model against random init and raw pixels",
                         "\n\n".join(t for t in (intro, about) if t),
                         tables=[("", lead_rows(ev))])
    out.mkdir(parents=True, exist_ok=True)
    results = {**suite_to_json(ev.suite), "lead": lead_rows(ev), "verdicts": verdict_lines(ev),
               "contenders": {c.name: {"path": str(c.path), "how": c.how,
                                       "history": summarize_history(c.history)}
                              for c in ev.contenders},
               "protocol": {"eval_seed": EVAL_SEED + 2 * ev.seed, "n_train": len(d.train_labels),
                            "n_test": len(d.test_labels), "n_resamples": ev.sizes.n_resamples},
               "seconds": round(ev.seconds, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    prefix = "SYNTHETIC — " if d.synthetic else ""
    return write_report(out, prefix + title, [lead, *_sections(ev, umap_method)])


# ----------------------------------------------------------------------------- commands


def run_demo(out_dir: str | Path = "runs/demo", profile: str | None = None,
             progress: bool = True, echo: Callable[[str], None] = print,
             minutes: float | None = None) -> Path:
    """``make demo``: pretrain the profile's preset, evaluate it beside the shipped checkpoint,
    write the report and print both verdicts. Returns the path of ``index.html``.

    ``minutes``: the CPU budget the preset's steps are fitted to (:mod:`radjepa_lab.budget`);
    None takes the profile's (5 for ``cpu``), 0 the preset's own steps. Writes ``pretrain/``,
    the report (``index.html``, ``report.md``, ``results.json``, figures) and ``demo.json``.
    """
    from radjepa_lab.budget import fit_to_minutes
    from radjepa_lab.train import pretrain

    prof = resolve_profile(profile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, Any] = {"profile": prof.name, "preset": prof.preset, "device": prof.device}
    budget = prof.budget_minutes if minutes is None else minutes or None
    t0 = time.perf_counter()
    cfg, timings["fit"] = fit_to_minutes(prof.config, budget, echo=echo)
    res = pretrain(cfg, out / "pretrain", progress=progress, overwrite=True)  # a rerun replaces it
    timings["pretrain_s"] = round(time.perf_counter() - t0, 1)
    how = (f"radjepa-lab pretrain --preset {prof.preset} --steps {cfg.steps} (batch "
           f"{cfg.batch_size}, {timings['pretrain_s'] / 60:.1f} min on this {prof.device}"
           + (f": the steps that fit {budget:g} min here" if timings["fit"] else "") + ")")
    contenders = [load_contender("your run", res.checkpoint, how)]
    if prof.name != "smoke" and SHIPPED_CHECKPOINT.is_file():
        contenders.insert(0, load_contender("shipped checkpoint", SHIPPED_CHECKPOINT, SHIPPED_HOW))
    if len({c.model.img_size for c in contenders}) > 1:  # e.g. gpu-short's 224 px ViT-S
        contenders = contenders[-1:]
    t1 = time.perf_counter()
    ev = evaluate_checkpoints(contenders, sizes=prof.probe, progress=progress)
    intro = ("Your run is the short pretraining this demo just did"
             + ("; the shipped checkpoint was trained on a GPU with the command shown"
                if len(contenders) > 1 else "")
             + ". A model learned when its Δ against the stronger random init of its own "
             "architecture has a 95% CI above 0; beating raw pixels as well means it learned more "
             "than a thumbnail of the image holds.")
    index = write_evaluation(
        ev, out, f"RadJEPA Lab demo — preset {prof.preset} on {prof.device}", intro,
        umap_method="pca" if prof.preset == "smoke" else "umap")
    timings["evaluate_s"] = round(time.perf_counter() - t1, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "demo.json").write_text(json.dumps(timings, indent=1))
    for line in verdict_lines(ev):
        echo(line)
    return index


def probe_report(
    checkpoint: str | Path,
    data: str = "phantoms",
    out_dir: str | Path = "runs/probe",
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    pools: Sequence[str] = (POOL,),
    n_resamples: int | None = None,
    umap_method: str = "umap",
    seg_epochs: int = 30,
    device: str = "auto",
    progress: bool = True,
    title: str | None = None,
    in_mean: Sequence[float] | None = None,
    in_std: Sequence[float] | None = None,
) -> Path:
    """``radjepa-lab probe``: evaluate one checkpoint with the demo's protocol; write a report.

    Sizes default to the demo's (the ``cpu`` profile's probe row). ``in_mean`` / ``in_std`` are
    an imported encoder's input statistics (default: a Hugging Face preprocessor_config.json
    beside the weights, else ImageNet's). Returns the path of ``index.html``; ``results.json``
    sits beside it.
    """
    base = resolve_profile("cpu").probe
    sizes = ProbeSizes(n_train or base.n_train, n_test or base.n_test,
                       n_resamples or base.n_resamples)
    path = Path(checkpoint)
    ev = evaluate_checkpoints([load_contender("checkpoint", path, in_mean=in_mean,
                                              in_std=in_std)], data, sizes, seed, pools,
                              seg_epochs=seg_epochs, device=device, progress=progress)
    return write_evaluation(ev, out_dir, title or f"RadJEPA Lab probe report — {path.name}",
                            f"Checkpoint: {path}", umap_method)


def embed_to_file(
    checkpoint: str | Path,
    data: str,
    out: str | Path,
    pool: str = "mean",
    size: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    in_mean: Sequence[float] | None = None,
    in_std: Sequence[float] | None = None,
) -> Path:
    """``radjepa-lab embed``: encode ``data`` with a checkpoint's encoder into one ``.npz``.

    The file holds ``pooled [N, D']``, ``labels``, ``idx``, ``classes``, ``grid`` and the
    encoder's input ``in_mean`` / ``in_std``; ``out`` may be a folder (then
    ``out/embeddings.npz``) or a file name. ``in_mean`` / ``in_std`` as in
    :func:`probe_report`.
    """
    from radjepa_lab.analysis.embed import extract_features, save_npz
    from radjepa_lab.data.datasets import resolve_dataset

    enc = load_encoder(checkpoint, in_mean=in_mean, in_std=in_std)
    img_size = size or enc.pos_grid[0] * enc.patch_size
    ds = resolve_dataset(data, img_size)
    feats = extract_features(enc, ds, pool=pool, batch_size=batch_size, progress=progress)
    out = Path(out)
    path = out / "embeddings.npz" if out.suffix != ".npz" else out
    save_npz(path, {"pooled": feats.pooled, "labels": feats.labels, "idx": feats.idx,
                    "classes": np.array(feats.classes, dtype=str), "grid": np.array(feats.grid),
                    "in_mean": enc.in_mean.flatten().numpy(),
                    "in_std": enc.in_std.flatten().numpy()})
    return path
