"""The `make demo` pipeline: phantoms -> pretrain -> embed -> probe -> report.

It is the kit's main job end to end on the embedded SYNTHETIC phantoms, with no
downloads. The profile (``auto`` -> ``cpu`` on a laptop, ``gpu-short`` on a GPU,
``smoke`` for tests) picks the pretraining preset; everything else is the same
library calls a notebook makes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from radjepa_lab.config import resolve_profile

# Probe sizes per profile: enough held-out phantoms for CIs that mean something on the real
# profiles, tiny for the smoke profile so the pipeline test takes seconds.
PROBE_SIZES: dict[str, tuple[int, int, int]] = {  # profile -> (n_train, n_test, bootstrap resamples)
    "smoke": (96, 48, 100),
    "cpu": (1000, 500, 1000),
    "gpu-short": (2000, 1000, 1000),
}


def run_demo(out_dir: str | Path = "runs/demo", profile: str | None = None,
             progress: bool = True) -> Path:
    """Run the whole pipeline and return the path of the report's ``index.html``.

    Writes ``pretrain/`` (checkpoint + metrics.jsonl), the probe report (``index.html``,
    ``report.md``, ``results.json``, figures) and ``demo.json`` with the timings.
    """
    from radjepa_lab.analysis.report import probe_report
    from radjepa_lab.train import pretrain

    prof = resolve_profile(profile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, Any] = {"profile": prof.name, "preset": prof.preset, "device": prof.device}
    cfg = prof.config
    t0 = time.perf_counter()
    res = pretrain(cfg, out / "pretrain", progress=progress)
    timings["pretrain_s"] = round(time.perf_counter() - t0, 1)
    n_train, n_test, n_boot = PROBE_SIZES.get(prof.preset, PROBE_SIZES["cpu"])
    t1 = time.perf_counter()
    index = probe_report(
        res.checkpoint, "phantoms", out, n_train=n_train, n_test=n_test, seed=1,
        n_resamples=n_boot, progress=progress,
        umap_method="pca" if prof.preset == "smoke" else "umap",
        title=f"RadJEPA Lab demo — preset {prof.preset} on {prof.device}",
    )
    timings["probe_s"] = round(time.perf_counter() - t1, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "demo.json").write_text(json.dumps(timings, indent=1))
    return index
