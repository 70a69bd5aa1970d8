"""Embedding extraction: pooled features and patch tokens from any kit encoder, cached on disk.

Every downstream analysis (probes, kNN, UMAP, segmentation, retrieval) starts from the same
arrays, so they are computed once per (weights, data, preprocessing, pooling) and cached as an
``.npz`` file whose name is a hash of all four; the data's part covers every item
(:func:`dataset_fingerprint`), so a changed image can never return stale features. Extraction streams the dataset through a
DataLoader and keeps only the features, never the images.

Pooling options (why more than one): a global average throws away *where* things are, and
laterality matters for several findings (a left effusion, a right pneumothorax); pooling the
token grid to 2x2 keeps coarse geometry, and on the phantoms it scores higher for every encoder
(``bench/RESULTS.md``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radjepa_lab.atomic import atomic_write
from radjepa_lab.config import resolve_device
from radjepa_lab.data.datasets import close_loader
from radjepa_lab.errors import RadJEPALabError
from radjepa_lab.models import evaluating

__all__ = [
    "POOLINGS",
    "Features",
    "Projection",
    "dataset_fingerprint",
    "encode_tokens",
    "extract_features",
    "neighbour_agreement",
    "pool_tokens",
    "project_2d",
    "save_npz",
    "state_dict_hash",
]

POOLINGS = ("mean", "2x2")


# --------------------------------------------------------------------------------------------
# hashing for the cache


def state_dict_hash(module: nn.Module) -> str:
    """SHA-256 of a module's state_dict (names, dtypes, shapes and bytes), order-independent."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _simple(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _simple(dataclasses.asdict(v))
    if isinstance(v, dict):
        return {str(k): _simple(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, list | tuple):
        return [_simple(x) for x in v] if len(v) <= 64 else f"seq{len(v)}"
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, Path):
        return str(v)
    return None


def dataset_fingerprint(dataset: Any) -> str:
    """A string that changes when any item of the dataset, or its configuration, changes.

    Uses ``dataset.fingerprint()`` when the dataset provides one (file datasets: every file's
    path, size and mtime; in-memory arrays: a hash of all bytes; phantoms: generator version,
    config and seed). Any other dataset is hashed item by item (every image and label), with
    its class, length and simple public attributes: slower, never stale.
    """
    fp = getattr(dataset, "fingerprint", None)
    if callable(fp):
        return f"{type(dataset).__qualname__}:{fp()}"
    h = hashlib.sha256()
    n = len(dataset)
    attrs = {k: _simple(v) for k, v in vars(dataset).items() if not k.startswith("_")}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    h.update(json.dumps([type(dataset).__qualname__, n, attrs], sort_keys=True).encode())
    for i in range(n):
        item = dataset[i]
        parts = ([item.get("img"), item.get("lab")] if isinstance(item, dict)
                 else list(item) if isinstance(item, list | tuple) else [item])
        for value in parts:
            try:
                h.update(np.ascontiguousarray(np.asarray(value, dtype=np.float32)).tobytes())
            except (TypeError, ValueError):  # a path, a report, None
                h.update(repr(value).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# pooling and token extraction


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int], mode: str = "mean") -> torch.Tensor:
    """Pool patch tokens ``[B, N, D]`` to one vector per image.

    ``"mean"``: average over tokens -> ``[B, D]``. ``"2x2"``: reshape to the ``grid``,
    adaptive-average-pool to 2x2 and flatten -> ``[B, 4D]`` (top-left, top-right, bottom-left,
    bottom-right per channel), which keeps left/right and upper/lower.
    """
    b, n, d = tokens.shape
    if n != grid[0] * grid[1]:
        raise RadJEPALabError(f"pool_tokens: {n} tokens do not fill a {grid[0]}x{grid[1]} grid")
    if mode == "mean":
        return tokens.mean(dim=1)
    if mode == "2x2":
        g = tokens.transpose(1, 2).reshape(b, d, grid[0], grid[1])
        return F.adaptive_avg_pool2d(g, 2).reshape(b, d * 4)
    raise RadJEPALabError(f"pool_tokens: mode must be one of {POOLINGS}, got {mode!r}")


def _grid(encoder: nn.Module, h: int, w: int) -> tuple[int, int]:
    gs = getattr(encoder, "grid_size", None)
    if callable(gs):
        return tuple(gs(h, w))  # type: ignore[return-value]
    p = encoder.patch_size
    p = p[0] if isinstance(p, tuple | list) else p
    return h // p, w // p


def encode_tokens(
    encoder: nn.Module, images: torch.Tensor, layers: Sequence[int | None] = (None,)
) -> list[torch.Tensor]:
    """Patch tokens ``[B, N, D]`` for each requested layer (``None`` = the final output).

    ``None`` calls ``encoder(x)`` (final norm, prefix tokens removed); an int ``l`` uses
    ``encoder.forward_layers(x, [l], norm=True)``, i.e. tokens after block ``l`` (negative
    indices count from the end).
    """
    out: list[torch.Tensor | None] = [None] * len(layers)
    ints = [(i, int(layer)) for i, layer in enumerate(layers) if layer is not None]
    if ints:
        depth = len(encoder.blocks)
        want = sorted({layer % depth for _, layer in ints})
        got = dict(zip(want, encoder.forward_layers(images, want, norm=True), strict=True))
        for i, layer in ints:
            out[i] = got[layer % depth]
    if any(layer is None for layer in layers):
        final = encoder(images)
        for i, layer in enumerate(layers):
            if layer is None:
                out[i] = final
    return out  # type: ignore[return-value]


@dataclass
class Features:
    """Features of one dataset under one encoder (and how they were made)."""

    pooled: np.ndarray | None  # [N, D'] float32
    tokens: np.ndarray | None  # [N, gh, gw, D] float32 (only when asked)
    labels: np.ndarray  # [N, F] float32, NaN = unknown
    idx: np.ndarray  # [N] dataset indices
    classes: list[str]
    grid: tuple[int, int]
    info: dict[str, Any] = field(default_factory=dict)  # key, pool, layer, cache path/hit

    def __len__(self) -> int:
        return len(self.labels)


def _cache_key(encoder: nn.Module, dataset: Any, args: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(type(encoder).__qualname__.encode())
    h.update(state_dict_hash(encoder).encode())
    h.update(dataset_fingerprint(dataset).encode())
    h.update(json.dumps(args, sort_keys=True).encode())
    return h.hexdigest()[:32]


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically: a crash never leaves a half-written file."""
    atomic_write(path, lambda f: np.savez(f, **arrays), "the embeddings")


class _Rows:
    """Per-batch rows written into ONE preallocated array (doubled if the length hint was
    short). Keeping a list of small per-batch arrays instead fragments the heap: each one
    lands in the hole a freed image batch left, so peak RSS grew by about the size of all
    images seen (measured: +54 MiB over 64 MiB of images; +7 MiB with this)."""

    def __init__(self, capacity: int, dtype: Any) -> None:
        self.cap, self.dtype, self.a, self.n = max(1, capacity), dtype, None, 0

    def add(self, rows: np.ndarray) -> None:
        b = len(rows)
        if self.a is None:
            self.a = np.empty((max(self.cap, b), *rows.shape[1:]), self.dtype)
        if self.n + b > len(self.a):
            grown = np.empty((max(2 * len(self.a), self.n + b), *self.a.shape[1:]), self.dtype)
            grown[: self.n] = self.a[: self.n]
            self.a = grown
        self.a[self.n : self.n + b] = rows
        self.n += b

    def result(self) -> np.ndarray:
        return self.a[: self.n] if self.a is not None else np.empty((0,), self.dtype)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Any,
    pool: str | None = "mean",
    layer: int | None = None,
    mid_layer: int | None = None,
    tokens: bool = False,
    batch_size: int = 64,
    device: str | torch.device | None = "auto",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    num_workers: int = 0,
) -> Features:
    """Run ``encoder`` over ``dataset`` and return pooled features and/or patch tokens.

    ``pool``: ``"mean"``, ``"2x2"`` or ``None`` (tokens only). ``layer``: which block's tokens
    (``None`` = final normed output). ``mid_layer``: also pool that block's tokens and
    concatenate them (mid layers often hold more local detail). ``tokens=True`` also returns
    the ``[N, gh, gw, D]`` tokens of ``layer`` (for the segmentation probe; 4 bytes x N x
    tokens x D, so mind memory on big sets). With ``cache_dir`` the result is loaded from /
    saved to ``cache_dir/<hash>.npz``.
    """
    from tqdm.auto import tqdm

    if pool is not None and pool not in POOLINGS:
        raise RadJEPALabError(f"extract_features: pool must be one of {POOLINGS} or None")
    if pool is None and not tokens:
        raise RadJEPALabError("extract_features: nothing to extract; set pool or tokens=True")
    args = {"pool": pool, "layer": layer, "mid_layer": mid_layer, "tokens": tokens, "v": 1}
    classes = list(getattr(dataset, "pathologies", []))
    cache_path = None
    if cache_dir is not None:
        key = _cache_key(encoder, dataset, args)
        cache_path = Path(cache_dir) / f"features_{key}.npz"
        if cache_path.exists():
            with np.load(cache_path, allow_pickle=False) as z:
                return Features(
                    pooled=z["pooled"] if pool else None,
                    tokens=z["tokens"] if tokens else None,
                    labels=z["labels"],
                    idx=z["idx"],
                    classes=[str(c) for c in z["classes"]],
                    grid=(int(z["grid"][0]), int(z["grid"][1])),
                    info={**args, "cache": str(cache_path), "cache_hit": True},
                )
    dev = resolve_device(device)
    moved = next(encoder.parameters()).device != dev
    if moved:
        orig_dev = next(encoder.parameters()).device
        encoder.to(dev)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    try:
        n_hint = len(dataset)
    except TypeError:  # an iterable dataset: grow as needed
        n_hint = batch_size
    pooled_l, tok_l = _Rows(n_hint, np.float32), _Rows(n_hint, np.float32)
    lab_l, idx_l = _Rows(n_hint, np.float32), _Rows(n_hint, np.int64)
    grid: tuple[int, int] = (0, 0)
    layers: list[int | None] = [layer] + ([mid_layer] if mid_layer is not None else [])
    it = iter(loader)
    try:
        with evaluating(encoder):
            for batch in tqdm(it, desc="embedding", disable=not progress, leave=False):
                x = batch["img"].to(dev, dtype=torch.float32)
                grid = _grid(encoder, x.shape[-2], x.shape[-1])
                outs = encode_tokens(encoder, x, layers)
                if pool is not None:
                    p = torch.cat([pool_tokens(o.float(), grid, pool) for o in outs], dim=1)
                    pooled_l.add(p.cpu().numpy())
                if tokens:
                    t = outs[0].float().reshape(len(x), grid[0], grid[1], -1)
                    tok_l.add(t.cpu().numpy())
                lab = batch.get("lab")
                lab_l.add(
                    lab.float().numpy() if lab is not None else np.zeros((len(x), 0), np.float32)
                )
                idx = batch.get("idx")
                idx_l.add(np.asarray(idx) if idx is not None else np.arange(len(x)))
    finally:
        close_loader(it)  # stop worker processes now; a notebook's traceback would keep them
        if moved:
            encoder.to(orig_dev)
    if lab_l.n == 0:
        raise RadJEPALabError("extract_features: the dataset yielded no images")
    feats = Features(
        pooled=pooled_l.result() if pool is not None else None,
        tokens=tok_l.result() if tokens else None,
        labels=lab_l.result(),
        idx=idx_l.result(),
        classes=classes,
        grid=grid,
        info={**args, "cache": str(cache_path) if cache_path else None, "cache_hit": False},
    )
    if cache_path is not None:
        arrays = {
            "labels": feats.labels,
            "idx": feats.idx,
            "classes": np.array(classes, dtype=str),
            "grid": np.array(grid),
        }
        if feats.pooled is not None:
            arrays["pooled"] = feats.pooled
        if feats.tokens is not None:
            arrays["tokens"] = feats.tokens
        save_npz(cache_path, arrays)
    return feats


# --------------------------------------------------------------------------------------------
# 2-D projection (UMAP with a PCA fallback)


@dataclass
class Projection:
    """2-D coordinates of an embedding set and the method that produced them."""

    coords: np.ndarray  # [N, 2]
    method: str  # "umap" or "pca"
    note: str = ""


def project_2d(
    features: np.ndarray,
    method: str = "umap",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    standardize: bool = True,
) -> Projection:
    """Project ``[N, D]`` features to 2-D with UMAP (seeded) or PCA.

    UMAP's first call compiles numba code (~10-20 s); ``method="pca"`` is instant and is also
    the fallback when umap-learn is missing or the set is too small for a neighbour graph.
    A fixed ``random_state`` makes UMAP deterministic (and single-threaded).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise RadJEPALabError(f"project_2d: need [N>=3, D] features, got {x.shape}")
    if standardize:
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    note = ""
    if method == "umap":
        if len(x) <= 5:
            note = "too few points for UMAP; used PCA"
        else:
            try:
                import umap
            except ImportError:
                note = "umap-learn is not installed; used PCA (pip install umap-learn)"
            else:
                reducer = umap.UMAP(
                    n_components=2,
                    n_neighbors=min(n_neighbors, len(x) - 1),
                    min_dist=min_dist,
                    random_state=seed,
                    n_jobs=1,  # a seed forces one thread anyway; say so to avoid a warning
                    init="pca" if len(x) < 50 else "spectral",
                )
                return Projection(reducer.fit_transform(x).astype(np.float32), "umap")
    elif method != "pca":
        raise RadJEPALabError(f"project_2d: method must be 'umap' or 'pca', got {method!r}")
    from sklearn.decomposition import PCA

    k = min(2, x.shape[1])
    c = PCA(n_components=k, random_state=seed).fit_transform(x)
    if k < 2:
        c = np.concatenate([c, np.zeros((len(c), 1))], axis=1)
    return Projection(c.astype(np.float32), "pca", note)


def neighbour_agreement(features: np.ndarray, values: Any, k: int = 10) -> tuple[float, float]:
    """How often an image's ``k`` nearest neighbours (cosine, in the full feature space) share
    its value of a categorical column, and what chance would give (the sum of squared class
    frequencies). The number behind "this map groups images by X", without the distortions of
    a 2-D projection."""
    x = np.asarray(features, dtype=np.float64)
    v = np.asarray(values)
    if x.ndim != 2 or len(x) != len(v) or len(x) <= k:
        raise RadJEPALabError(f"neighbour_agreement: need [N > k={k}, D] features and N values, "
                              f"got {x.shape} and {v.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argpartition(-sim, k, axis=1)[:, :k]
    agree = float((v[nn] == v[:, None]).mean())
    _, counts = np.unique(v, return_counts=True)
    return agree, float(((counts / counts.sum()) ** 2).sum())
