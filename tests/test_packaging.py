"""Packaging invariants: environment.yml mirrors pyproject, entry points exist, CI runs `make test`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _env_yml() -> tuple[str, list[str], list[str]]:
    """Tiny parser for our environment.yml (avoids a PyYAML dependency): python spec, conda deps, pip deps."""
    python, conda, pip = "", [], []
    section = None
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if re.match(r"^\S", line):
            section = line.split(":")[0]
            continue
        item = line.strip()
        if section != "dependencies" or not item.startswith("-"):
            continue
        value = item[1:].strip()
        if raw.startswith("      -"):
            pip.append(value)
        elif value.startswith("python="):
            python = value.split("=", 1)[1]
        elif value != "pip:":
            conda.append(value)
    return python, conda, pip


def test_environment_yml_mirrors_pyproject() -> None:
    proj = _pyproject()["project"]
    python, conda, pip = _env_yml()
    assert python == "3.11", f"environment.yml pins python={python!r}; the kit targets 3.11"
    major, minor = (int(x) for x in python.split("."))
    floor = re.match(r">=(\d+)\.(\d+)", proj["requires-python"])
    assert floor and (major, minor) >= (int(floor[1]), int(floor[2]))
    assert conda == ["pip"], f"conda deps must come from pyproject via pip, found {conda}"
    assert pip == ["-e .[dev,xrv]"], f"environment.yml must install the kit with -e .[dev,xrv] like the Makefile, found {pip}"
    assert "dev" in proj["optional-dependencies"]


def test_torch_is_not_pinned_and_required_packages_declared() -> None:
    proj = _pyproject()["project"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in proj["dependencies"]}
    for need in ("torch", "timm", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "umap-learn",
                 "scikit-learn", "pydicom", "pydicom-data", "captum", "tqdm"):
        assert need in names, f"pyproject is missing runtime dependency {need}"
    for dep in proj["dependencies"]:
        assert not dep.replace(" ", "").startswith("torch=="), "torch must use a plain range, not a pin"
    dev = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0] for d in proj["optional-dependencies"]["dev"]}
    assert {"pytest", "nbmake", "hypothesis", "ruff"} <= dev
    assert any(d.startswith("torchxrayvision") for d in proj["optional-dependencies"]["xrv"])


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme
    assert "set -euo pipefail" in ci, ".ci/run must fail on the first failing command"


def test_console_entry_points() -> None:
    proj = _pyproject()["project"]
    assert proj["scripts"]["radjepa-lab"] == "radjepa_lab.cli:main"
    out = subprocess.run([sys.executable, "-m", "radjepa_lab", "--help"], capture_output=True,
                         text=True, check=True, timeout=120)
    for sub in ("make-phantoms", "pretrain", "embed", "probe", "demo"):
        assert sub in out.stdout, f"`python -m radjepa_lab --help` does not list {sub}"
