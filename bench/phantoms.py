"""Phantom generation rate (phantoms/s per core) at 64 and 128 px.

Run: ``OMP_NUM_THREADS=1 python bench/phantoms.py [--n 300] [--sizes 64 128]``

``--pixel-baseline`` also prints how far a raw-pixel thumbnail gets on the findings (16 x 16
average pool + logistic regression, AUPRC per finding, 2000 train / 1000 test at 64 px) for
``nuisance`` 1 and 0: the figure quoted in data/README.md. A learned representation has to
beat it (~1-2 min on one core).

Prints wall-clock and CPU-time (``time.process_time``) rates: on a shared machine the CPU
rate is the per-core figure (wall time also counts time the process waited for a core).
The baseline in the same run is the bare cost of one float32 ``exp`` over the image, to
show how many full-image operations one phantom costs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from radjepa_lab.data.phantom import FINDINGS, PhantomConfig, generate_batch, generate_phantom


def rate(fn, n: int) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - w0), n / max(time.process_time() - c0, 1e-9)


def pixel_baseline(nuisance: float, n_train: int = 2000, n_test: int = 1000) -> dict[str, float]:
    """AUPRC per finding of logistic regression on 16x16 average-pooled 64 px phantoms."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    cfg = PhantomConfig(size=64, nuisance=nuisance)
    tr, te = generate_batch(n_train, 1, cfg), generate_batch(n_test, 2, cfg)

    def thumb(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), 16, 4, 16, 4).mean((2, 4)).reshape(len(images), -1)

    sc = StandardScaler().fit(thumb(tr.images))
    xtr, xte = sc.transform(thumb(tr.images)), sc.transform(thumb(te.images))
    out = {}
    for j, f in enumerate(FINDINGS):
        clf = LogisticRegression(C=0.1, max_iter=2000).fit(xtr, tr.labels[:, j])
        out[f] = float(average_precision_score(te.labels[:, j], clf.predict_proba(xte)[:, 1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--pixel-baseline", action="store_true")
    args = ap.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    for size in args.sizes:
        cfg = PhantomConfig(size=size)
        t0 = time.perf_counter()
        generate_phantom(0, cfg)  # builds the cached vessel bank for this size
        first = time.perf_counter() - t0
        wall, cpu = rate(lambda i, c=cfg: generate_phantom(1000 + i, c), args.n)
        img = np.random.default_rng(0).random((size, size), dtype=np.float32)
        _, op_cpu = rate(lambda i, a=img: np.exp(a), 2000)
        print(f"SYNTHETIC phantoms {size:4d} px: {cpu:7.1f} /s/core (CPU time), {wall:7.1f} /s wall"
              f" | first call incl. cache build {first * 1e3:.0f} ms"
              f" | one full-image exp: {op_cpu:.0f} /s -> a phantom costs ~{op_cpu / cpu:.0f} exps")
    if args.pixel_baseline:
        for nuisance in (1.0, 0.0):
            ap_ = pixel_baseline(nuisance)
            per = ", ".join(f"{k} {v:.2f}" for k, v in ap_.items())
            print(f"raw-pixel 16x16 baseline, nuisance={nuisance}: macro AUPRC "
                  f"{np.mean(list(ap_.values())):.3f} ({per}; chance ~0.3)")


if __name__ == "__main__":
    main()
