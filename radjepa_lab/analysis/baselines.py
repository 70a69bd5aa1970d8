"""Baselines and the encoder comparison table.

A self-supervised encoder is only interesting if it beats what needs no training: a random
encoder of the same architecture (with *both* the kit's init and PyTorch's default init, since
init alone moved the random baseline by 0.05-0.10 AUPRC in the kit's prototype) and the raw
pixels of a thumbnail. :func:`compare_encoders` probes every feature set the same way, on the
same test images with the same bootstrap resamples, and returns one table with paired deltas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from radjepa_lab.analysis.metrics import (
    CI,
    bootstrap_indices,
    macro_auprc,
    paired_bootstrap,
)
from radjepa_lab.analysis.probes import DEFAULT_CS, ProbeResult, run_knn_probe, run_linear_probe
from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "ComparisonRow",
    "EvalData",
    "FeatureSet",
    "SuiteResult",
    "compare_encoders",
    "dataset_eval_data",
    "evaluate_suite",
    "parse_pool",
    "phantom_eval_data",
    "pixel_features",
    "random_encoder",
    "strongest",
]


def random_encoder(model_cfg: Any, init: str = "kit", seed: int = 0) -> torch.nn.Module:
    """An untrained encoder of the same architecture (``init="kit"`` or ``"torch_default"``)."""
    from radjepa_lab.models import build_encoder

    return build_encoder(model_cfg, init=init, seed=seed).eval()


def pixel_features(images: np.ndarray | torch.Tensor, size: int = 16) -> np.ndarray:
    """Raw-pixel baseline: images ``[N, H, W]`` (or ``[N, 1, H, W]``) average-pooled to size^2.

    For low-level phantom findings a thumbnail is close to ideal, so a learned encoder must beat
    it to claim it learned something beyond intensities.
    """
    x = torch.as_tensor(np.asarray(images, np.float32) if not torch.is_tensor(images) else images)
    x = x.float()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise RadJEPALabError(f"pixel_features: images must be [N, H, W], got {tuple(x.shape)}")
    return F.adaptive_avg_pool2d(x, size).reshape(len(x), -1).numpy()


@dataclass
class FeatureSet:
    """Train and test features of one encoder under one pooling."""

    name: str
    train: np.ndarray
    test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ComparisonRow:
    """One line of the comparison table: a feature set under one probe."""

    name: str
    probe: str  # "linear" or "knn"
    macro_auprc: CI
    macro_auroc: CI
    auprc: dict[str, float]
    delta_vs_baseline: CI | None  # paired bootstrap, this - baseline
    p_value: float | None
    baseline: str
    knn_accuracy: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        """The paired CI against the baseline excludes 0."""
        d = self.delta_vs_baseline
        return d is not None and (d.low > 0 or d.high < 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (CIs become {estimate, low, high})."""
        d = asdict(self)
        d["significant"] = self.significant
        return d


def strongest(rows: Sequence[ComparisonRow], names: Sequence[str], probe: str = "linear") -> str:
    """Name of the feature set with the highest macro AUPRC among ``names`` (e.g. random inits)."""
    cands = [r for r in rows if r.name in names and r.probe == probe]
    if not cands:
        raise RadJEPALabError(f"strongest: none of {list(names)} in the table")
    return max(cands, key=lambda r: r.macro_auprc.estimate).name


def compare_encoders(
    feature_sets: Sequence[FeatureSet] | Mapping[str, tuple[np.ndarray, np.ndarray]],
    y_train: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[str],
    baseline: str | Sequence[str] | None = None,
    probes: Sequence[str] = ("linear", "knn"),
    n_resamples: int = 1000,
    seed: int = 0,
    Cs: Sequence[float] = DEFAULT_CS,
) -> tuple[list[ComparisonRow], dict[tuple[str, str], ProbeResult]]:
    """Probe every feature set identically and return one table with paired deltas.

    ``baseline``: the name to compare against, or a list of names of which the one with the
    highest macro AUPRC (per probe) is chosen, i.e. "compare against the stronger random init".
    All rows share one set of bootstrap indices, so every delta is a paired comparison on the
    same resampled test images. Returns ``(rows, results)`` where ``results[(name, probe)]``
    holds the scores for PR curves and further tests.
    """
    if isinstance(feature_sets, Mapping):
        feature_sets = [FeatureSet(k, v[0], v[1]) for k, v in feature_sets.items()]
    names = [f.name for f in feature_sets]
    if len(set(names)) != len(names):
        raise RadJEPALabError(f"compare_encoders: feature-set names must be unique, got {names}")
    y_test = np.asarray(y_test, dtype=np.float64)
    idx = bootstrap_indices(len(y_test), n_resamples, seed)
    results: dict[tuple[str, str], ProbeResult] = {}
    for fs in feature_sets:
        for p in probes:
            if p == "linear":
                r = run_linear_probe(
                    fs.train, y_train, fs.test, y_test, classes, fs.name, Cs, seed, indices=idx
                )
            elif p == "knn":
                r = run_knn_probe(fs.train, y_train, fs.test, y_test, classes, fs.name, seed=seed, indices=idx)
            else:
                raise RadJEPALabError(f"compare_encoders: unknown probe {p!r}; use 'linear' or 'knn'")
            results[(fs.name, p)] = r
    rows: list[ComparisonRow] = []
    for p in probes:
        base = baseline
        if base is not None and not isinstance(base, str):
            cands = [b for b in base if (b, p) in results]
            base = max(cands, key=lambda b: results[(b, p)].metrics.macro_auprc.estimate) if cands else None
        if base is not None and (base, p) not in results:
            raise RadJEPALabError(f"compare_encoders: baseline {base!r} is not among {names}")
        for fs in feature_sets:
            r = results[(fs.name, p)]
            delta = pv = None
            if base is not None and fs.name != base:
                keep = [c for c in r.metrics.classes if c not in r.metrics.skipped]
                cols = [r.metrics.classes.index(c) for c in keep]
                pr = paired_bootstrap(
                    y_test[:, cols],
                    r.scores[:, cols],
                    results[(base, p)].scores[:, cols],
                    macro_auprc,
                    indices=idx,
                    names=(fs.name, base),
                )
                delta, pv = pr.delta, pr.p_value
            rows.append(
                ComparisonRow(
                    name=fs.name,
                    probe=p,
                    macro_auprc=r.metrics.macro_auprc,
                    macro_auroc=r.metrics.macro_auroc,
                    auprc=dict(r.metrics.auprc),
                    delta_vs_baseline=delta,
                    p_value=pv,
                    baseline=base or "",
                    knn_accuracy=getattr(r, "mean_accuracy", None),
                    info={**fs.info, **r.info, "skipped": r.metrics.skipped},
                )
            )
    return rows, results


# --------------------------------------------------------------------------------------------
# held-out evaluation data and the whole suite (probes + kNN + segmentation + retrieval)


@dataclass
class EvalData:
    """Held-out train/test images for probing (features are computed from these).

    ``masks_*`` and ``reports_*`` exist for phantoms only; segmentation and retrieval are
    skipped without them.
    """

    train_images: np.ndarray  # [N, S, S] float32 in [0, 1]
    train_labels: np.ndarray  # [N, F]
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    train_masks: np.ndarray | None = None  # [N, K, S, S] bool
    test_masks: np.ndarray | None = None
    train_reports: list[str] | None = None
    test_reports: list[str] | None = None
    structures: list[str] = field(default_factory=list)
    synthetic: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def _resize(x: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if x.shape[-1] == size:
        return x
    t = torch.from_numpy(np.asarray(x, np.float32))
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    mode = "nearest" if nearest else ("area" if t.shape[-1] > size else "bilinear")
    t = F.interpolate(t, size=(size, size), mode=mode)
    out = t.reshape(*lead, size, size).numpy()
    return out > 0.5 if nearest else out


def phantom_eval_data(
    n_train: int = 1500,
    n_test: int = 500,
    seed: int = 1234,
    size: int = 64,
    phantom_size: int | None = None,
    phantom_cfg: Any = None,
) -> EvalData:
    """Held-out phantoms for probing: train and test drawn with seeds ``seed`` and ``seed+1``.

    Use a ``seed`` different from pretraining's so the probe never sees pretraining images.
    Phantoms are generated at ``phantom_size`` (default ``size``) and resized to the encoder's
    ``size`` the way ``train.py`` resizes them (area / bilinear; masks nearest).
    """
    from radjepa_lab.data.phantom import FINDINGS, STRUCTURES, PhantomConfig, generate_batch

    px = phantom_size or size
    cfg = phantom_cfg or PhantomConfig(size=px)
    tr = generate_batch(n_train, seed=seed, cfg=cfg)
    te = generate_batch(n_test, seed=seed + 1, cfg=cfg)
    return EvalData(
        train_images=_resize(tr.images, size),
        train_labels=np.asarray(tr.labels, np.float32),
        test_images=_resize(te.images, size),
        test_labels=np.asarray(te.labels, np.float32),
        classes=list(FINDINGS),
        train_masks=_resize(tr.masks, size, nearest=True),
        test_masks=_resize(te.masks, size, nearest=True),
        train_reports=list(tr.reports),
        test_reports=list(te.reports),
        structures=list(STRUCTURES),
        synthetic=True,
        info={"seed": seed, "n_train": n_train, "n_test": n_test, "size": size, "phantom_px": px},
    )


def dataset_eval_data(
    dataset: Any, size: int, test_fraction: float = 0.25, seed: int = 0, max_items: int | None = None
) -> EvalData:
    """Split any kit dataset (dict items with ``img`` and ``lab``) into probe train/test sets.

    The images are loaded once (resized to ``size``); only labelled classification is possible
    (no masks or reports).
    """
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    if n < 8:
        raise RadJEPALabError(f"dataset_eval_data: need at least 8 labelled images, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset))[:n]
    imgs, labs = [], []
    for i in order:
        item = dataset[int(i)]
        img = torch.as_tensor(item["img"]).float()
        img = img.mean(0) if img.ndim == 3 else img
        imgs.append(_resize(img.numpy()[None], size)[0])
        labs.append(np.asarray(item["lab"], np.float32))
    imgs_a, labs_a = np.stack(imgs), np.stack(labs)
    n_test = max(1, int(round(test_fraction * n)))
    classes = list(getattr(dataset, "pathologies", [f"label_{j}" for j in range(labs_a.shape[1])]))
    return EvalData(imgs_a[n_test:], labs_a[n_test:], imgs_a[:n_test], labs_a[:n_test], classes,
                    info={"n": n, "seed": seed, "size": size})


@dataclass
class SuiteResult:
    """Everything :func:`evaluate_suite` measured, keyed by feature-set name."""

    rows: list[ComparisonRow]
    results: dict[tuple[str, str], ProbeResult]
    baseline: dict[str, str]  # probe -> chosen baseline name
    dice: dict[str, dict[str, float]] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)  # name -> RetrievalResult
    rankme: dict[str, float] = field(default_factory=dict)
    seg_pred: dict[str, np.ndarray] = field(default_factory=dict)  # name -> a few predictions
    features: dict[str, FeatureSet] = field(default_factory=dict)


def parse_pool(spec: str, depth: int) -> tuple[str, int | None]:
    """``"mean"``, ``"2x2"``, ``"2x2+mid"`` -> (pool, mid_layer); mid = block depth//2 - 1."""
    pool, _, extra = spec.partition("+")
    if pool not in ("mean", "2x2") or extra not in ("", "mid"):
        raise RadJEPALabError(f"pooling spec {spec!r}: use 'mean', '2x2', 'mean+mid' or '2x2+mid'")
    return pool, (max(0, depth // 2 - 1) if extra else None)


def evaluate_suite(
    encoders: Mapping[str, torch.nn.Module],
    data: EvalData,
    pools: Sequence[str] = ("2x2",),
    baseline: Sequence[str] | str | None = None,
    pixels: bool = True,
    probes: Sequence[str] = ("linear", "knn"),
    segmentation: bool = True,
    retrieval: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
    seg_epochs: int = 30,
    device: str = "auto",
    progress: bool = True,
    cache_dir: str | None = None,
) -> SuiteResult:
    """Probe every encoder (x every pooling) plus raw pixels on ``data``; one table back.

    Feature-set names are ``"<encoder> [<pool>]"``; ``baseline`` names encoders (the stronger
    of several is chosen per pooling and probe, see :func:`compare_encoders`). Segmentation
    Dice and retrieval use each encoder's final tokens / first pooling.
    """
    from radjepa_lab.analysis.embed import ArrayDataset, extract_features
    from radjepa_lab.analysis.metrics import rankme as _rankme
    from radjepa_lab.analysis.retrieval import evaluate_retrieval
    from radjepa_lab.analysis.segmentation import evaluate_seg_head

    train_ds = ArrayDataset(data.train_images, data.train_labels, data.classes)
    test_ds = ArrayDataset(data.test_images, data.test_labels, data.classes)
    base_list = [baseline] if isinstance(baseline, str) else list(baseline or [])
    out = SuiteResult([], {}, {})
    do_seg = segmentation and data.train_masks is not None
    do_ret = retrieval and data.train_reports is not None
    for pool_spec in pools:
        sets: list[FeatureSet] = []
        for name, enc in encoders.items():
            pool, mid = parse_pool(pool_spec, len(enc.blocks))
            want_tok = do_seg and pool_spec == pools[0]
            kw = dict(pool=pool, mid_layer=mid, device=device, progress=progress,
                      cache_dir=cache_dir)
            ftr = extract_features(enc, train_ds, tokens=want_tok, **kw)
            fte = extract_features(enc, test_ds, tokens=want_tok, **kw)
            fs = FeatureSet(f"{name} [{pool_spec}]", ftr.pooled, fte.pooled,
                            {"encoder": name, "pool": pool_spec})
            sets.append(fs)
            out.features[fs.name] = fs
            out.rankme[fs.name] = _rankme(fte.pooled)
            if want_tok:
                seg = evaluate_seg_head(ftr.tokens, data.train_masks, fte.tokens, data.test_masks,
                                        data.structures, epochs=seg_epochs, seed=seed,
                                        keep_pred=True)
                out.dice[name] = seg.dice
                out.seg_pred[name] = seg.pred[:4]
            if do_ret and pool_spec == pools[0]:
                out.retrieval[name] = evaluate_retrieval(
                    fte.pooled, data.test_reports, ftr.pooled, data.train_reports, data.classes
                )
        if pixels:
            if pool_spec == pools[0]:  # once: its features do not depend on the pooling
                fs = FeatureSet("pixels 16x16", pixel_features(data.train_images),
                                pixel_features(data.test_images),
                                {"encoder": "pixels", "pool": "16x16"})
                sets.append(fs)
                out.features[fs.name] = fs
                out.rankme[fs.name] = _rankme(fs.test)
        bl = [f"{b} [{pool_spec}]" for b in base_list]
        rows, results = compare_encoders(sets, data.train_labels, data.test_labels, data.classes,
                                         baseline=bl or None, probes=probes,
                                         n_resamples=n_resamples, seed=seed)
        for p in probes:
            chosen = {r.baseline for r in rows if r.probe == p and r.baseline}
            if chosen:
                out.baseline[f"{p} [{pool_spec}]"] = chosen.pop()
        out.rows.extend(rows)
        out.results.update(results)
    if do_ret and pixels:
        px_tr, px_te = pixel_features(data.train_images), pixel_features(data.test_images)
        out.retrieval["pixels 16x16"] = evaluate_retrieval(
            px_te, data.test_reports, px_tr, data.train_reports, data.classes
        )
    return out
