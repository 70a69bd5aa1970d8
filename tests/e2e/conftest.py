"""Fixtures for the browser end-to-end tests: one JupyterLab server, one Chromium, one page.

Skips with a clear message when playwright or /usr/bin/chromium is missing, except under
CI=true, where a missing browser FAILS (CI must run these tests, not silently skip them).
A terminal summary line says how many e2e tests actually ran.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
if str(E2E_DIR) not in sys.path:  # works with any pytest --import-mode
    sys.path.insert(0, str(E2E_DIR))

import e2e_lab  # noqa: E402


def notebooks_dir() -> Path:
    return e2e_lab.notebooks_dir(REPO_ROOT)


def artifacts_dir() -> Path:
    return e2e_lab.artifacts_dir(REPO_ROOT)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: browser end-to-end tests")
    config.addinivalue_line(
        "markers", "e2e_order(group, notebook, step): run-order key for the e2e tests"
    )


def _is_e2e(item: pytest.Item) -> bool:
    return Path(item.path).resolve().is_relative_to(E2E_DIR)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark e2e tests and order them: self-tests, then each notebook followed by its
    interaction checks (which reuse the notebook already executed in the page)."""
    positions = [i for i, it in enumerate(items) if _is_e2e(it)]
    e2e_items = [items[i] for i in positions]
    for it in e2e_items:
        it.add_marker(pytest.mark.e2e)

    def key(it: pytest.Item) -> tuple:
        m = it.get_closest_marker("e2e_order")
        return tuple(m.args) if m else (9, "", 0)

    for pos, it in zip(positions, sorted(e2e_items, key=key), strict=True):
        items[pos] = it


# --------------------------------------------------------------------------------------------
# Session fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_required() -> None:
    """Skip (locally) or fail (CI=true) when the browser stack is missing."""
    reason = e2e_lab.browser_unavailable_reason()
    if reason is None:
        return
    if e2e_lab.is_ci():
        pytest.fail(f"CI=true but the e2e browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"e2e browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def lab_workspace(tmp_path_factory: pytest.TempPathFactory, browser_required: None) -> Path:
    """Temporary mirror of the repo with a COPY of notebooks/ (outputs are autosaved there)."""
    root = tmp_path_factory.mktemp("e2e-workspace")
    return e2e_lab.prepare_workspace(REPO_ROOT, notebooks_dir(), root)


@pytest.fixture(scope="session")
def lab_server(
    lab_workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e_lab.LabServer]:
    """One JupyterLab for the whole session (random port and token, 127.0.0.1 only)."""
    state = tmp_path_factory.mktemp("e2e-jupyter-state")
    server = e2e_lab.LabServer(lab_workspace, state, artifacts_dir() / "jupyterlab.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def lab_page(
    lab_server: e2e_lab.LabServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e_lab.LabPage]:
    """Debian Chromium (fresh profile) with one JupyterLab page shared by all e2e tests."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("e2e-chromium-profile")
    with sync_playwright() as pw:
        context = e2e_lab.launch_browser(pw, profile)
        try:
            page = e2e_lab.LabPage(context, lab_server)
            yield page
            page.close_current()
        finally:
            context.close()


@pytest.fixture(scope="session")
def e2e_artifacts() -> Path:
    path = artifacts_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# Reporting: how many e2e tests really ran
# --------------------------------------------------------------------------------------------

def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print 'e2e browser tests: N ran ...' so CI logs show they were not silently skipped."""
    stats = terminalreporter.stats
    timings: list[tuple[str, float]] = []
    ran: dict[str, int] = {"passed": 0, "failed": 0, "error": 0}
    skipped: dict[str, int] = {}
    seen = False
    spent = 0.0  # setup + call + teardown of e2e items only (JupyterLab start included)
    for outcome, reports in stats.items():
        if outcome not in {"passed", "failed", "skipped", "error"}:
            continue  # e.g. "deselected" holds items, "warnings" holds warning records
        for rep in reports:
            if not isinstance(getattr(rep, "nodeid", None), str):
                continue
            if not (config.rootpath / rep.nodeid.split("::")[0]).resolve().is_relative_to(E2E_DIR):
                continue
            seen = True
            spent += float(getattr(rep, "duration", 0.0) or 0.0)
            props = dict(getattr(rep, "user_properties", []) or [])
            if rep.when == "call" and "e2e_notebook" in props:
                timings.append((str(props["e2e_notebook"]), float(props["e2e_seconds"])))
            if outcome == "skipped":
                reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
                reason = reason.removeprefix("Skipped: ")
                skipped[reason] = skipped.get(reason, 0) + 1
            elif outcome == "passed" and rep.when == "call":
                ran["passed"] += 1
            elif outcome == "failed":
                ran["failed" if rep.when == "call" else "error"] += 1
            elif outcome == "error":
                ran["error"] += 1
    if not seen:
        return
    total = ran["passed"] + ran["failed"]
    spent_txt = f", {spent:.0f} s in e2e tests"
    terminalreporter.write_sep("-", "e2e browser tests")
    terminalreporter.write_line(
        f"e2e browser tests: {total} ran ({ran['passed']} passed, {ran['failed']} failed), "
        f"{ran['error']} errors, {sum(skipped.values())} skipped{spent_txt}"
    )
    for nb, seconds in timings:
        terminalreporter.write_line(f"  {seconds:6.1f} s  run all cells: {nb}")
    for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"  skipped x{n}: {reason}")
    if total:
        terminalreporter.write_line(f"  screenshots: {artifacts_dir()}")
