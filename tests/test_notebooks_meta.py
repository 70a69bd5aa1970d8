"""Static checks of the course notebooks (GUIDE.md §3): no kernel is started here.

What nbmake cannot see: outputs are stripped in git, the kernel is ``python3``, every notebook
opens with learning objectives and a setup cell that resolves the profile, closes with "What
you saw" and questions, exercise checks are tagged so stubs may fail while solutions may not,
every widget's function is also called directly, and nothing reaches the network.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SEQUENCE = (
    "00_data_tour",
    "01_masking_sampler",
    "02_encoders_and_predictor",
    "03_pretraining",
    "04_predicted_vs_target_latents",
    "05_attention_maps",
    "06_embeddings_umap",
    "07_probes_and_segmentation",
    "08_report_retrieval",
    "09_jepa_vs_dino_vs_mae",
)
# widget wrapper -> the plain function it calls, which must also appear in a plain cell
WIDGET_FUNCTIONS = {
    "mask_widget": "plot_sampled_masks",
    "attention_widget": "plot_attention_heads",
    "latent_widget": "plot_latents",
    "umap_widget": "plot_embedding",
}
NOTEBOOKS = sorted(p for p in NB_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
IDS = [p.relative_to(NB_DIR).as_posix() for p in NOTEBOOKS]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def test_the_course_sequence_exists() -> None:
    missing = [s for s in SEQUENCE if not (NB_DIR / f"{s}.ipynb").is_file()]
    assert not missing, f"missing notebooks: {missing}"
    assert len(list((NB_DIR / "exercises").glob("*.ipynb"))) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_valid_and_stripped(path: Path) -> None:
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them before committing"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in metadata; strip it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_kernel_is_python3(path: Path) -> None:
    assert _read(path).metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_opens_with_title_and_learning_objectives(path: Path) -> None:
    first = _read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), path.name
    assert re.search(r"^#+ Learning objectives", first.source, re.M | re.I), path.name
    assert len(re.findall(r"^- ", first.source, re.M)) >= 2, f"{path.name}: list >= 2 objectives"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_is_the_profile_setup(path: Path) -> None:
    src = _code(_read(path))[0].source
    assert "from radjepa_lab.notebook import setup" in src and "setup(" in src, (
        f"{path.name}: the first code cell must call radjepa_lab.notebook.setup() (profile print)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_ends_with_what_you_saw_and_questions(path: Path) -> None:
    last = [c for c in _read(path).cells if c.cell_type == "markdown"][-1].source
    assert re.search(r"^#+ What you saw", last, re.M | re.I), f"{path.name}: no 'What you saw'"
    m = re.search(r"^#+ Questions(.*)", last, re.M | re.I | re.S)
    assert m, f"{path.name}: no 'Questions' section in the last markdown cell"
    assert len(re.findall(r"^\d+\. ", m.group(1), re.M)) >= 3, f"{path.name}: >= 3 questions"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_network_and_no_second_knob(path: Path) -> None:
    for c in _code(_read(path)):
        assert not re.search(r"https?://|urllib|requests\.|wget|curl ", c.source), (
            f"{path.name}: code cells must not touch the network:\n{c.source}"
        )
        assert "RADJEPA_LAB_PROFILE" not in c.source and "os.environ" not in c.source, (
            f"{path.name}: the profile is the only knob; don't read or set env vars in cells"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_widgets_have_a_direct_call(path: Path) -> None:
    cells = [c.source for c in _code(_read(path))]
    for widget, fn in WIDGET_FUNCTIONS.items():
        if any(f"{widget}(" in s for s in cells):
            plain = [s for s in cells if f"{fn}(" in s and "_widget(" not in s]
            assert plain, f"{path.name}: {widget} is used but {fn}() is never called in a plain cell"


def test_exercise_stubs_may_fail_but_solutions_may_not() -> None:
    for path in sorted((NB_DIR / "exercises").glob("*.ipynb")):
        cells = _code(_read(path))
        checks = [c for c in cells if "check_" in c.source and "import" in c.source]
        assert checks, f"{path.name}: no check_*() cell"
        for c in checks:
            assert "raises-exception" in _tags(c), f"{path.name}: tag the check cell raises-exception"
        assert sum("exercise-stub" in _tags(c) for c in cells) == 1, path.name
    for path in sorted((NB_DIR / "solutions").glob("*.ipynb")):
        cells = _code(_read(path))
        assert not any("raises-exception" in _tags(c) for c in cells), (
            f"{path.name}: solutions must pass their checks without raises-exception"
        )
        assert sum("solution" in _tags(c) for c in cells) == 1, path.name
    main = [p for p in NOTEBOOKS if p.parent == NB_DIR]
    for path in main:
        assert not any("raises-exception" in _tags(c) for c in _code(_read(path))), path.name
