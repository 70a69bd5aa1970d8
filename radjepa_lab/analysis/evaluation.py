"""The evaluation suite: held-out data, and every encoder probed the same way on it.

:func:`evaluate_suite` is the one protocol behind ``make demo``, ``radjepa-lab probe``, notebook
07 and ``bench/quality.py``: for each encoder (and raw pixels) it extracts features, runs the
linear and kNN probes with shared bootstrap resamples (paired deltas against the stronger
random init), a linear segmentation head on patch tokens, report retrieval, and RankMe of the
test features. :func:`phantom_eval_data` draws held-out phantoms from seeds pretraining never
uses; :func:`dataset_eval_data` splits any labelled kit dataset.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from radjepa_lab.analysis.baselines import (
    ComparisonRow,
    FeatureSet,
    compare_encoders,
    pixel_features,
)
from radjepa_lab.analysis.probes import ProbeResult
from radjepa_lab.data.transforms import resize_batch
from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "EvalData",
    "SuiteResult",
    "dataset_eval_data",
    "evaluate_suite",
    "paired_delta",
    "parse_pool",
    "phantom_eval_data",
    "suite_to_json",
]


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
        train_images=resize_batch(tr.images, size),
        train_labels=np.asarray(tr.labels, np.float32),
        test_images=resize_batch(te.images, size),
        test_labels=np.asarray(te.labels, np.float32),
        classes=list(FINDINGS),
        train_masks=resize_batch(tr.masks, size, nearest=True),
        test_masks=resize_batch(te.masks, size, nearest=True),
        train_reports=list(tr.reports),
        test_reports=list(te.reports),
        structures=list(STRUCTURES),
        synthetic=True,
        info={"seed": seed, "n_train": n_train, "n_test": n_test, "size": size, "phantom_px": px},
    )


def _duplicate_groups(keys: list[tuple[str | None, str]]) -> list[int]:
    """Group id of each item: items sharing a path or a content hash (transitively) share one."""
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, (path, digest) in enumerate(keys):
        for key in ((("path", path),) if path else ()) + (("hash", digest),):
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    return [find(i) for i in range(len(keys))]


def dataset_eval_data(
    dataset: Any, size: int, test_fraction: float = 0.25, seed: int = 0, max_items: int | None = None
) -> EvalData:
    """Split any kit dataset (dict items with ``img`` and ``lab``) into probe train/test sets.

    The images are loaded once (resized to ``size``); only labelled classification is possible
    (no masks or reports). Duplicates (the same path, or the same pixels under another name) are
    kept on one side of the split, so a probe is never tested on an image it was trained on; a
    ``UserWarning`` gives their number.
    """
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    if n < 8:
        raise RadJEPALabError(f"dataset_eval_data: need at least 8 labelled images, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset))[:n]
    imgs, labs, keys = [], [], []
    for i in order:
        item = dataset[int(i)]
        img = torch.as_tensor(item["img"]).float()
        img = img.mean(0) if img.ndim == 3 else img
        raw = np.ascontiguousarray(img.numpy())
        keys.append((item.get("path"), hashlib.sha1(raw.tobytes()).hexdigest()))
        imgs.append(resize_batch(raw[None], size)[0])
        labs.append(np.asarray(item["lab"], np.float32))
    imgs_a, labs_a = np.stack(imgs), np.stack(labs)
    n_test = max(1, int(round(test_fraction * n)))
    group = _duplicate_groups(keys)
    n_dup = n - len(set(group))
    if n_dup:
        warnings.warn(f"dataset_eval_data: {n_dup} of {n} images duplicate another (same path "
                      "or same pixels); each set of duplicates is kept on one side of the "
                      "probe split.", UserWarning, stacklevel=2)
    sizes = Counter(group)
    test_groups: set[int] = set()
    taken = 0
    for g in sizes:  # groups in the shuffled order of their first member
        if taken >= n_test:
            break
        test_groups.add(g)
        taken += sizes[g]
    is_test = np.array([g in test_groups for g in group])
    classes = list(getattr(dataset, "pathologies", [f"label_{j}" for j in range(labs_a.shape[1])]))
    return EvalData(imgs_a[~is_test], labs_a[~is_test], imgs_a[is_test], labs_a[is_test], classes,
                    info={"n": n, "seed": seed, "size": size, "n_duplicates": n_dup})


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


def _pooled_baselines(baseline: Any, sets: Sequence[FeatureSet], pool: str) -> Any:
    """Encoder-level baseline names -> feature-set names under one pooling (see evaluate_suite)."""
    def fs(names: str | Sequence[str]) -> list[str]:
        return [f"{b} [{pool}]" for b in ([names] if isinstance(names, str) else names)]

    if baseline is None:
        return None
    if isinstance(baseline, Mapping):
        by_encoder = {f.info.get("encoder"): f.name for f in sets}
        out = {by_encoder[k]: fs(v) for k, v in baseline.items() if k in by_encoder}
        if "*" in baseline:  # the default for every other feature set (e.g. pixels)
            out.update({f.name: fs(baseline["*"]) for f in sets if f.name not in out})
        return out
    return fs(baseline)


def evaluate_suite(
    encoders: Mapping[str, torch.nn.Module],
    data: EvalData,
    pools: Sequence[str] = ("2x2",),
    baseline: Sequence[str] | str | Mapping[str, Sequence[str]] | None = None,
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
    of several is chosen per pooling and probe, see :func:`compare_encoders`), or maps each
    encoder to its own candidates (key ``"*"``: the default, e.g. for pixels). Segmentation
    Dice and retrieval use each encoder's final tokens / first pooling.
    """
    from radjepa_lab.analysis.embed import extract_features
    from radjepa_lab.analysis.retrieval import evaluate_retrieval
    from radjepa_lab.analysis.segmentation import evaluate_seg_head
    from radjepa_lab.data.datasets import ArrayDataset
    from radjepa_lab.monitors import rankme as _rankme

    train_ds = ArrayDataset(data.train_images, data.train_labels, data.classes)
    test_ds = ArrayDataset(data.test_images, data.test_labels, data.classes)
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
                                        keep_pred=True, progress=progress)
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
        rows, results = compare_encoders(sets, data.train_labels, data.test_labels, data.classes,
                                         baseline=_pooled_baselines(baseline, sets, pool_spec),
                                         probes=probes, n_resamples=n_resamples, seed=seed,
                                         progress=progress)
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


def suite_to_json(suite: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a ``baselines.SuiteResult`` (no arrays)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, np.ndarray):
            return None
        return v

    return clean(
        {
            "rows": [r.to_dict() for r in suite.rows],
            "baseline": suite.baseline,
            "dice": suite.dice,
            "rankme": suite.rankme,
            "retrieval": {
                k: {"rouge_l": v.rouge_l, "bleu4": v.bleu4, "finding_f1": v.finding_f1}
                for k, v in suite.retrieval.items()
            },
        }
    )


def paired_delta(suite: SuiteResult, data: EvalData, a: str, b: str, probe: str = "linear",
                 n_resamples: int = 1000, seed: int = 0) -> Any:
    """Paired bootstrap CI of macro AUPRC(a) - macro AUPRC(b) for two feature sets of one suite,
    on the same resamples :func:`evaluate_suite` used (so it pairs with every row's delta)."""
    from radjepa_lab.analysis.metrics import bootstrap_indices, macro_auprc, paired_bootstrap

    ra, rb = suite.results[(a, probe)], suite.results[(b, probe)]
    y = np.asarray(data.test_labels, dtype=np.float64)
    skipped = set(ra.metrics.skipped) | set(rb.metrics.skipped)
    cols = [i for i, c in enumerate(ra.metrics.classes) if c not in skipped]
    idx = bootstrap_indices(len(y), n_resamples, seed)
    return paired_bootstrap(y[:, cols], ra.scores[:, cols], rb.scores[:, cols], macro_auprc,
                            indices=idx, names=(a, b)).delta
