"""Per-notebook wall time under the smoke profile (the `pytest --nbmake notebooks/` budget).

Runs every notebook the way nbmake does (nbclient, kernel ``python3``, working directory = the
notebook's folder, cells tagged ``raises-exception`` may fail) with
``RADJEPA_LAB_PROFILE=smoke``, and prints one row per notebook, the total, and the total as a
fraction of the 10-minute budget of issue 5. The baseline, measured in the same run, is a
notebook holding only the setup cell: kernel start-up plus imports, the floor every notebook
pays (run first and last; the smaller is used, since other load on a shared machine only ever
adds time). Notebooks are never modified (outputs stay in memory).

    python bench/notebooks.py                 # everything under notebooks/
    python bench/notebooks.py --only 0[0-3]   # a glob on the relative path
    python bench/notebooks.py --json bench/results/notebooks.json
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
BUDGET_S = 600.0


def discover(pattern: str | None) -> list[Path]:
    """Main notebooks, then exercises, then solutions (the order pytest collects them)."""
    found = sorted(p for p in NB_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if pattern:
        found = [p for p in found if fnmatch.fnmatch(p.relative_to(NB_DIR).as_posix(), f"*{pattern}*")]
    return found


def run_notebook(nb, cwd: Path, timeout: int) -> tuple[float, str]:
    """Execute an in-memory notebook; return (wall seconds, "ok" or the error)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    t0 = time.perf_counter()
    try:
        client.execute()
        status = "ok"
    except CellExecutionError as e:
        status = "FAILED: " + str(e).strip().splitlines()[-1][:80]
    except Exception as e:  # noqa: BLE001 - a timeout or dead kernel is a result here
        status = f"FAILED: {type(e).__name__}: {str(e)[:80]}"
    return time.perf_counter() - t0, status


def baseline_notebook():
    """A notebook with only the setup cell: what every notebook pays before its own work."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("from radjepa_lab.notebook import setup\n\n"
                                           "profile = setup()")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nbformat.from_dict(nb)


def main(argv: list[str] | None = None) -> int:
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="glob on the notebook path relative to notebooks/")
    ap.add_argument("--profile", default="smoke", help="RADJEPA_LAB_PROFILE (default: smoke)")
    ap.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    a = ap.parse_args(argv)

    os.environ["RADJEPA_LAB_PROFILE"] = a.profile  # kernels inherit it: the one knob
    paths = discover(a.only)
    if not paths:
        print(f"no notebooks match {a.only!r} under {NB_DIR}", file=sys.stderr)
        return 2
    print(f"RADJEPA_LAB_PROFILE={a.profile} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"
          f" cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    base_first, base_status = run_notebook(baseline_notebook(), NB_DIR, a.timeout)
    rows = []
    for p in paths:
        rel = p.relative_to(NB_DIR).as_posix()
        secs, status = run_notebook(nbformat.read(p, as_version=4), p.parent, a.timeout)
        rows.append({"notebook": rel, "seconds": round(secs, 1), "status": status})
        print(f"  {secs:7.1f} s  {rel}  {status}", flush=True)
    base_last, _ = run_notebook(baseline_notebook(), NB_DIR, a.timeout)
    base_s = min(base_first, base_last)  # the floor; the other one saw more load from others
    total = sum(r["seconds"] for r in rows)
    width = max(len(r["notebook"]) for r in rows)
    print()
    print(f"| {'notebook':{width}s} | wall s | above baseline s | status |")
    print(f"|{'-' * (width + 2)}|-------:|-----------------:|--------|")
    for r in rows:
        print(f"| {r['notebook']:{width}s} | {r['seconds']:6.1f} | "
              f"{r['seconds'] - base_s:16.1f} | {r['status']} |")
    print(f"| {'TOTAL (' + str(len(rows)) + ' notebooks)':{width}s} | {total:6.1f} | "
          f"{total - base_s * len(rows):16.1f} | |")
    print(f"\nbaseline (setup cell only, {base_status}): {base_s:.1f} s per notebook "
          f"(first {base_first:.1f} s, last {base_last:.1f} s), {base_s * len(rows):.0f} s of the total")
    print(f"total {total:.0f} s = {total / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget "
          f"({'within' if total <= BUDGET_S else 'OVER'} budget)")
    failed = [r for r in rows if r["status"] != "ok"]
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"profile": a.profile, "baseline_s": base_s, "total_s": total,
                                      "budget_s": BUDGET_S, "rows": rows}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
