"""Packaging and layout invariants: environment.yml mirrors pyproject, entry points exist, CI runs
`make test`, the analysis layer stays below the application layer and modules stay readable."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "radjepa_lab"


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


# ----------------------------------------------------------------------------- layout

UPPER_LAYERS = ("radjepa_lab.viz", "radjepa_lab.notebook", "radjepa_lab.cli", "radjepa_lab.demo")
LONG_MODULES_ALLOWED = {"data/phantom.py", "exercises.py"}
MAX_MODULE_LINES = 600


def _imported(tree: ast.AST, package: str) -> set[str]:
    """Every module an AST imports, at any nesting level (function bodies, try blocks,
    ``if TYPE_CHECKING``), relative imports resolved against ``package``, plus
    ``importlib.import_module("...")`` calls with a literal name."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # from pkg import submodule
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return found


def _is_upper(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in UPPER_LAYERS)


def test_analysis_never_imports_viz_notebook_cli_or_demo() -> None:
    # the walker itself: nested, relative and from-package imports are all seen
    planted = ast.parse("def f():\n    try:\n        from ..viz import plots\n    except ImportError:"
                        "\n        from radjepa_lab import demo\n")
    assert {"radjepa_lab.viz.plots", "radjepa_lab.demo"} <= _imported(planted,
                                                                     "radjepa_lab.analysis")
    files = sorted((PKG / "analysis").glob("*.py"))
    assert len(files) >= 10
    bad = {}
    for path in files:
        names = _imported(ast.parse(path.read_text(encoding="utf-8")), "radjepa_lab.analysis")
        hits = sorted(n for n in names if _is_upper(n))
        if hits:
            bad[path.name] = hits
    assert not bad, f"analysis modules import the layers above them: {bad}"


def test_no_module_is_longer_than_600_lines() -> None:
    lengths = {p.relative_to(PKG).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
               for p in PKG.rglob("*.py")}
    assert LONG_MODULES_ALLOWED <= set(lengths)
    long = {name: n for name, n in lengths.items()
            if n > MAX_MODULE_LINES and name not in LONG_MODULES_ALLOWED}
    assert not long, f"split these modules (at most {MAX_MODULE_LINES} lines each): {long}"
