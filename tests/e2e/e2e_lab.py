"""Browser harness: JupyterLab + Debian Chromium driven by Playwright (sync API).

Why this exists: nbmake only proves that notebook code runs. It cannot see a widget that
never renders, a slider that does not redraw its figure, a figure printed as ``<Figure size``
text, or an exception raised inside a widget callback (ipywidgets swallows those; they only
reach the browser). This module opens notebooks in a real JupyterLab page, runs them, and
inspects what a student would see.

Everything here is plain Python so that the fixtures (``conftest.py``) and the tests stay
short. It never touches the committed notebooks: the server serves a temporary copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Debian's Chromium (Playwright's own browser download is unreachable from CI and classrooms).
CHROMIUM_PATH = os.environ.get("RADJEPA_E2E_CHROMIUM", "/usr/bin/chromium")
# Flags required by the issue: headless, no sandbox (we run as root in CI containers), no GPU,
# and nothing that talks to the network on start-up.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
VIEWPORT = {"width": 1280, "height": 900}
KERNEL_NAME = "python3"
DEFAULT_TIMEOUT_S = 240.0
# Interactive controls (ipywidgets 8 class names). Used to count rendered widgets and to find
# a control by its description label.
CONTROL_SELECTOR = ", ".join(
    f".jupyter-widgets.{c}"
    for c in (
        "widget-slider",
        "widget-dropdown",
        "widget-toggle-buttons",
        "widget-radio",
        "widget-select",
        "widget-select-multiple",
        "widget-checkbox",
        "widget-button",
        "widget-text",
        "widget-play",
        "widget-toggle-button",
        "widget-colorpicker",
    )
)
# Top-level directories of the repo that are NOT linked into the temporary workspace: the
# notebooks are copied instead (outputs get autosaved there) and run outputs stay private.
_NOT_LINKED = {"notebooks", "runs", "test-artifacts", "build", "dist"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LabError(RuntimeError):
    """The harness itself could not do its job (server, page, timeout). Message says why."""


class NotebookTimeout(LabError):
    """A notebook did not finish in time; the message names the notebook and the stuck cell."""


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


def browser_unavailable_reason() -> str | None:
    """Return why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "Python package 'playwright' is not installed "
            "(pip install -e '.[dev]' installs it; do NOT run 'playwright install')"
        )
    if not os.access(CHROMIUM_PATH, os.X_OK):
        return (
            f"{CHROMIUM_PATH} not found: install Debian's Chromium with "
            "'.ci/install-browser.sh' (apt-get install chromium)"
        )
    return None


def is_ci() -> bool:
    """True when env CI says we are in CI, where a missing browser is an error, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


# --------------------------------------------------------------------------------------------
# Notebook discovery and expectations
# --------------------------------------------------------------------------------------------


def notebooks_dir(repo_root: Path) -> Path:
    """Notebooks under test; RADJEPA_E2E_NOTEBOOKS_DIR overrides (used to test the harness)."""
    override = os.environ.get("RADJEPA_E2E_NOTEBOOKS_DIR")
    return Path(override).resolve() if override else repo_root / "notebooks"


def artifacts_dir(repo_root: Path) -> Path:
    """Screenshots and executed copies go here (test-artifacts/ is git-ignored)."""
    override = os.environ.get("RADJEPA_E2E_ARTIFACTS")
    return Path(override).resolve() if override else repo_root / "test-artifacts" / "e2e"


def discover_notebooks(nb_dir: Path) -> list[str]:
    """Notebook paths relative to ``nb_dir``: top-level notebooks, then solutions.

    ``exercises/`` is excluded on purpose: the stubs contain TODO cells that raise or make the
    checkers fail by design; their solutions are what must run green.
    """
    found: list[str] = []
    for pattern in ("*.ipynb", "solutions/*.ipynb"):
        for p in sorted(nb_dir.glob(pattern)):
            if ".ipynb_checkpoints" not in p.parts:
                found.append(p.relative_to(nb_dir).as_posix())
    return found


@dataclass
class Interaction:
    """One widget interaction whose effect on the rendered figure is checked.

    ``control`` is "slider", "dropdown", "toggle", "radio" or "auto" (first matching kind);
    ``label`` is a case-insensitive regex matched against the widget's description.
    """

    name: str
    label: str
    control: str = "auto"


@dataclass
class Expectation:
    """What a notebook must show once it has run (see README.md for the metadata format)."""

    min_images: int = 0
    min_widgets: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    interactions: list[Interaction] = field(default_factory=list)


# Defaults for the course notebooks (GUIDE.md §3). A notebook can override any field through
# its metadata: {"radjepa_lab": {"e2e": {"min_images": 2, "interactions": [...]}}}.
DEFAULT_EXPECTATIONS: dict[str, Expectation] = {
    "00_data_tour": Expectation(min_images=1),
    "01_masking_sampler": Expectation(
        min_images=1,
        min_widgets=1,
        interactions=[Interaction("mask-scale slider redraws the mask figure", r"scale")],
    ),
    "02_encoders_and_predictor": Expectation(min_images=1),
    "03_pretraining": Expectation(min_images=1),
    "04_predicted_vs_target_latents": Expectation(
        min_images=1,
        min_widgets=1,
        interactions=[Interaction("patch picker changes the latent map", r"patch")],
    ),
    "05_attention_maps": Expectation(
        min_images=1,
        min_widgets=1,
        interactions=[Interaction("patch picker changes the attention map", r"patch")],
    ),
    "06_embeddings_umap": Expectation(
        min_images=1,
        min_widgets=1,
        interactions=[Interaction("colour-by selector recolours the UMAP", r"colou?r")],
    ),
    "07_probes_and_segmentation": Expectation(min_images=1),
    "08_report_retrieval": Expectation(),
    "09_jepa_vs_dino_vs_mae": Expectation(min_images=5),
}


def load_expectation(nb_file: Path, timeout_s: float | None = None) -> Expectation:
    """Merge the default table entry with the notebook's own ``radjepa_lab.e2e`` metadata."""
    base = DEFAULT_EXPECTATIONS.get(nb_file.stem, Expectation())
    exp = Expectation(base.min_images, base.min_widgets, base.timeout_s, list(base.interactions))
    try:
        meta = json.loads(nb_file.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError) as err:
        raise LabError(f"{nb_file}: cannot read notebook JSON ({err}); fix or delete it") from err
    e2e = meta.get("radjepa_lab", {}).get("e2e", {})
    if not isinstance(e2e, dict):
        raise LabError(f"{nb_file}: metadata radjepa_lab.e2e must be an object, got {e2e!r}")
    exp.min_images = int(e2e.get("min_images", exp.min_images))
    exp.min_widgets = int(e2e.get("min_widgets", exp.min_widgets))
    exp.timeout_s = float(e2e.get("timeout_s", exp.timeout_s))
    if "interactions" in e2e:
        exp.interactions = [
            Interaction(
                name=str(i.get("name", i["label"])),
                label=str(i["label"]),
                control=str(i.get("control", "auto")),
            )
            for i in e2e["interactions"]
        ]
    if timeout_s is not None:
        exp.timeout_s = timeout_s
    return exp


# --------------------------------------------------------------------------------------------
# Workspace and server
# --------------------------------------------------------------------------------------------


def prepare_workspace(repo_root: Path, nb_src: Path, dest: Path) -> Path:
    """Build ``dest`` = a throwaway mirror of the repo with a COPY of the notebooks.

    JupyterLab autosaves executed outputs, and committed notebooks must stay stripped, so the
    notebooks are copied. Other top-level entries (data/, radjepa_lab/, ...) are symlinked so
    that relative paths such as ``../data/...`` behave exactly as under nbmake.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for entry in repo_root.iterdir():
        if entry.name.startswith(".") or entry.name in _NOT_LINKED:
            continue
        (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    if nb_src.is_dir():
        shutil.copytree(nb_src, dest / "notebooks", ignore=shutil.ignore_patterns(".ipynb_*"))
    else:
        (dest / "notebooks").mkdir()
    return dest


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (tiny race window accepted; port_retries=0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings that make the DOM inspectable and the page quiet.

    windowingMode=none renders every cell (the default virtualises off-screen cells, which
    would hide their outputs from the error scan); news/update checks would hit the network.
    """
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for rel, content in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content), encoding="utf-8")


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server and its kernels: smoke profile, 1 thread, inline figures."""
    env = dict(os.environ if base is None else base)
    env.pop("MPLBACKEND", None)  # a non-inline backend turns figures into "<Figure size" text
    env["RADJEPA_LAB_PROFILE"] = "smoke"
    env["OMP_NUM_THREADS"] = "1"
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


class LabServer:
    """A private JupyterLab server (random port + token) serving ``root``."""

    def __init__(self, root: Path, state_dir: Path, log_path: Path) -> None:
        self.root = root
        self.state_dir = state_dir
        self.log_path = log_path
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the server and wait for /api/status; raise LabError with the log tail if not."""
        settings = self.state_dir / "user-settings"
        _write_lab_settings(settings)
        env = kernel_env()
        for name in ("config", "runtime", "ipython"):
            (self.state_dir / name).mkdir(parents=True, exist_ok=True)
        env["JUPYTER_CONFIG_DIR"] = str(self.state_dir / "config")
        env["JUPYTER_RUNTIME_DIR"] = str(self.state_dir / "runtime")
        env["IPYTHONDIR"] = str(self.state_dir / "ipython")
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.allow_root=True",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands reliably
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.state_dir / 'workspaces'}",
            "--LabApp.news_url=None",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(
                    f"JupyterLab exited with code {self.proc.returncode} on start-up; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api/status", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise LabError(
            f"JupyterLab did not answer /api/status within {timeout_s:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def api(self, method: str, path: str, timeout: float = 10) -> Any:
        """Call the server's REST API with the token; returns decoded JSON (or None)."""
        req = urllib.request.Request(
            self.base_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel so CPU and memory go to the next notebook."""
        try:
            for sess in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{sess['id']}", timeout=30)
        except (urllib.error.URLError, OSError, ValueError):
            pass

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        """Terminate the server (it shuts its kernels down), kill it if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()


def launch_browser(playwright: Any, user_data_dir: Path) -> Any:
    """Launch Debian's Chromium with a fresh profile; returns a Playwright BrowserContext."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=CHROMIUM_PATH,
        headless=True,
        args=list(CHROMIUM_ARGS),
        viewport=VIEWPORT,
    )


# --------------------------------------------------------------------------------------------
# Findings (what the error detector reports)
# --------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One problem a student would see (or would silently miss)."""

    kind: str  # "error", "traceback", "callback-error", "figure-as-text", "widget-as-text", ...
    where: str  # "cell output", "widget output", "kernel message (widget callback)", ...
    text: str
    cell: int | None = None
    source: str = ""

    def __str__(self) -> str:
        loc = f"cell #{self.cell}" if self.cell is not None else "no cell"
        src = f" `{self.source}`" if self.source else ""
        return f"[{self.kind}] {loc}{src} ({self.where}): {self.text}"


def summarize_traceback(text: str) -> str:
    """'ValueError: msg (at Cell In[3], line 4)' from a traceback, ANSI removed.

    Falls back to the last line when no exception line is recognisable.
    """
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not set(ln) <= {"-", " "}]
    if not lines:
        return ""
    exc = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b")
    final = next((ln for ln in reversed(lines) if exc.match(ln)), lines[-1])
    where = next(
        (ln for ln in reversed(lines) if ln.startswith(("Cell In[", "File ", 'File "'))), ""
    )
    return (final + (f" (at {where})" if where else ""))[:500]


# --------------------------------------------------------------------------------------------
# The page driver
# --------------------------------------------------------------------------------------------

_JS_OPEN = """
async ({path, kernel}) => {
  const app = window.jupyterapp;
  let w = await app.commands.execute('docmanager:open',
      {path, factory: 'Notebook', kernel: {name: kernel}});
  if (!w || !w.context) {
    w = Array.from(app.shell.widgets('main')).find(x => x.context && x.context.path === path);
  }
  if (!w) throw new Error('JupyterLab did not open ' + path);
  await w.context.ready;
  await w.sessionContext.ready;
  const k0 = w.sessionContext.session && w.sessionContext.session.kernel;
  if (k0) await k0.info;  // kernel answered: run time excludes kernel start-up
  app.shell.activateById(w.id);
  const state = {panel: w, done: null, messages: [], kernelEvents: []};
  window.__e2e = state;
  const strip = s => String(s || '').replace(/\\x1b\\[[0-9;]*[A-Za-z]/g, '');
  w.sessionContext.iopubMessage.connect((_, msg) => {
    const t = msg.header.msg_type;
    const parent = (msg.parent_header && msg.parent_header.msg_type) || null;
    if (t === 'error') {
      state.messages.push({type: t, parent,
        text: strip((msg.content.traceback || []).join('\\n')) ||
              (msg.content.ename + ': ' + msg.content.evalue)});
    } else if (t === 'stream' && msg.content.name === 'stderr' &&
               /Traceback \\(most recent call last\\)/.test(strip(msg.content.text))) {
      state.messages.push({type: 'stderr', parent, text: strip(msg.content.text)});
    }
  });
  w.sessionContext.statusChanged.connect((_, status) => {
    if (status === 'dead' || status === 'restarting' || status === 'autorestarting') {
      state.kernelEvents.push(status);
    }
  });
  return {id: w.id, windowing: w.content.notebookConfig.windowingMode,
          kernel: w.sessionContext.session && w.sessionContext.session.kernel
          ? w.sessionContext.session.kernel.name : null};
}
"""

_JS_RUN_ALL = """
() => {
  const state = window.__e2e;
  state.done = null;
  window.jupyterapp.shell.activateById(state.panel.id);
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
      ok => { state.done = {ok: !!ok}; },
      err => { state.done = {ok: false, error: String(err)}; });
}
"""

_JS_PROGRESS = """
() => {
  const state = window.__e2e;
  const w = state.panel;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = w.content.widgets.map((c, i) => {
    const prompt = c.node.querySelector('.jp-InputPrompt');
    const src = c.model.sharedModel.getSource();
    return {i, type: c.model.type,
            count: c.model.type === 'code' ? c.model.executionCount : null,
            state: c.model.executionState || null,
            prompt: prompt ? prompt.textContent.trim() : '',
            empty: src.trim().length === 0,
            src: src.split('\\n').filter(l => l.trim()).join(' ; ').slice(0, 160)};
  });
  const dialog = document.querySelector('.jp-Dialog');
  return {done: state.done, kernel: kernel ? kernel.status : 'none', cells,
          kernelEvents: state.kernelEvents,
          dialog: dialog ? dialog.innerText.slice(0, 500) : null};
}
"""

_JS_SNAPSHOT = """
(controlSelector) => {
  const w = window.__e2e.panel;
  const root = w.node;
  const imgs = Array.from(root.querySelectorAll('.jp-OutputArea-output img'))
      .filter(im => im.complete && im.naturalWidth > 0);
  const controls = Array.from(root.querySelectorAll(controlSelector))
      .filter(el => !el.parentElement.closest(controlSelector));
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  return {images: imgs.length, widgets: controls.length,
          outputs: root.querySelectorAll('.jp-OutputArea-output').length,
          textLength: root.innerText.length,
          kernel: kernel ? kernel.status : 'none',
          pendingImages: root.querySelectorAll('.jp-OutputArea-output img').length - imgs.length};
}
"""

_JS_SCAN = """
() => {
  const state = window.__e2e;
  const w = state.panel;
  const strip = s => String(s || '').replace(/\\x1b\\[[0-9;]*[A-Za-z]/g, '');
  const widgetRepr = /^(interactive|VBox|HBox|Box|GridBox|Output|IntSlider|FloatSlider|FloatLogSlider|IntRangeSlider|FloatRangeSlider|SelectionSlider|Dropdown|ToggleButtons|RadioButtons|Select|Tab|Accordion|Button|Play|Checkbox)\\(/;
  const found = [];
  w.content.widgets.forEach((c, i) => {
    if (c.model.type !== 'code') return;
    const src = (c.model.sharedModel.getSource().split('\\n').find(l => l.trim()) || '').slice(0, 80);
    const tags = (c.model.getMetadata && c.model.getMetadata('tags')) || [];
    const expected = tags.includes('raises-exception');
    let modelError = false;
    const outs = c.model.outputs;
    for (let k = 0; k < outs.length; k++) {
      const o = outs.get(k).toJSON();
      if (o.output_type === 'error') {
        modelError = true;
        if (!expected) found.push({kind: 'error', where: 'cell output', cell: i, source: src,
            text: strip((o.traceback || []).join('\\n')) || (o.ename + ': ' + o.evalue)});
      }
    }
    c.node.querySelectorAll('.jp-OutputArea-output').forEach(el => {
      const nested = !!el.parentElement.closest('.jp-OutputArea-output');
      const text = strip(el.innerText || '');
      const mime = el.getAttribute('data-mime-type') || '';
      const isLeaf = !el.querySelector('.jp-OutputArea-output');
      if (!isLeaf) return;
      if (/Traceback \\(most recent call last\\)|Error displaying widget|Failed to display widget/.test(text)) {
        if (nested) {
          found.push({kind: 'traceback', where: 'widget output', cell: i, source: src, text});
        } else if (!modelError && !expected) {
          found.push({kind: 'traceback', where: 'cell output (' + mime + ')', cell: i,
                      source: src, text});
        }
      }
      if (/<Figure size \\d+(\\.\\d+)?x\\d+(\\.\\d+)? with \\d+ Axes>/.test(text)) {
        found.push({kind: 'figure-as-text', where: nested ? 'widget output' : 'cell output',
                    cell: i, source: src, text: text.slice(0, 200) +
                    ' (a figure was printed instead of rendered: is MPLBACKEND set, or ' +
                    'plt.show() missing inside the widget Output?)'});
      }
      if (mime === 'text/plain' && widgetRepr.test(text.trim())) {
        found.push({kind: 'widget-as-text', where: 'cell output', cell: i, source: src,
                    text: text.slice(0, 200) + ' (widget not rendered: widget manager missing?)'});
      }
    });
  });
  state.messages.forEach(m => {
    if (m.parent === 'execute_request') return;  // shown in a cell output, scanned above
    found.push({kind: 'callback-error',
                where: 'kernel message from ' + (m.parent || 'unknown') +
                       ' (swallowed widget-callback exception, not shown in any cell)',
                cell: null, source: '', text: m.text});
  });
  state.kernelEvents.forEach(ev => found.push({kind: 'kernel', where: 'kernel status',
      cell: null, source: '', text: 'kernel went ' + ev + ' (crash or out of memory?)'}));
  return found;
}
"""


@dataclass
class RunResult:
    """Outcome of running one notebook in the page."""

    path: str
    seconds: float
    completed: bool
    unexecuted: list[str]
    images: int
    widgets: int
    findings: list[Finding]


class LabPage:
    """One JupyterLab page that opens, runs and inspects notebooks one after another.

    Notebooks are opened with JupyterLab commands inside the same page (no reload per notebook:
    a JupyterLab start costs ~5 s on 2 cores). The previous notebook and its kernel are closed
    first, so each notebook starts from a fresh kernel.
    """

    def __init__(self, context: Any, server: LabServer) -> None:
        self.context = context
        self.server = server
        self.page = context.pages[0] if context.pages else context.new_page()
        self.console: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))
        self.current: str | None = None
        self.result: RunResult | None = None
        self._load_lab()

    def _on_console(self, msg: Any) -> None:
        if msg.type == "error":
            self.console.append(f"console.error: {msg.text[:300]}")

    def _load_lab(self) -> None:
        url = f"{self.server.base_url}/lab?reset&token={self.server.token}"
        self.page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        try:
            self.page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.started !== undefined "
                "&& document.querySelector('#jp-main-dock-panel')",
                timeout=90_000,
            )
            self.page.evaluate(
                "async () => { await window.jupyterapp.started; await window.jupyterapp.restored; }"
            )
        except Exception as err:  # playwright TimeoutError and friends
            raise LabError(
                f"JupyterLab UI did not load at {self.server.base_url}/lab ({err}); "
                f"server log:\n{self.server.log_tail()}"
            ) from err
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        self.current = None
        self.result = None

    # -- open / run / close ------------------------------------------------------------------

    def close_current(self) -> None:
        """Save (into the temporary copy), close the notebook and shut its kernel down."""
        if self.current is None:
            return
        try:
            self.page.evaluate(
                """async () => { const s = window.__e2e; if (!s) return;
                   try { await s.panel.context.save(); } catch (e) {}
                   try { await s.panel.sessionContext.shutdown(); } catch (e) {}
                   s.panel.dispose(); window.__e2e = null; }"""
            )
        except Exception:  # a crashed page: reload below
            self._load_lab()
        self.server.shutdown_kernels()
        self.current = None
        self.result = None

    def open(self, nb_path: str) -> None:
        """Open ``nb_path`` (relative to the server root) with a fresh python3 kernel."""
        self.close_current()
        self.console.clear()
        args = {"path": nb_path, "kernel": KERNEL_NAME}
        try:
            info = self.page.evaluate(_JS_OPEN, args)
        except Exception:
            self._load_lab()  # recover once from a broken page, then let errors surface
            info = self.page.evaluate(_JS_OPEN, args)
        self.current = nb_path
        if info["windowing"] != "none":
            raise LabError(
                f"notebook windowingMode is {info['windowing']!r}, not 'none': off-screen cells "
                "would not be rendered and their errors would go unseen (settings not applied?)"
            )

    def progress(self) -> dict[str, Any]:
        return self.page.evaluate(_JS_PROGRESS)

    def run_all(
        self, timeout_s: float = DEFAULT_TIMEOUT_S, screenshot_on_timeout: Path | None = None
    ) -> RunResult:
        """Run all cells via JupyterLab's own Run All command and wait until settled.

        Raises NotebookTimeout naming the running cell when the budget is exhausted (the
        kernel is interrupted and shut down first, so the next notebook gets the CPU).
        """
        assert self.current is not None, "open() a notebook first"
        t0 = time.monotonic()
        self.page.evaluate(_JS_RUN_ALL)
        deadline = t0 + timeout_s
        prog = self.progress()
        while time.monotonic() < deadline:
            prog = self.progress()
            if prog["dialog"]:
                raise LabError(
                    f"{self.current}: JupyterLab shows a dialog while running: {prog['dialog']!r}"
                )
            if prog["kernelEvents"] and "dead" in prog["kernelEvents"]:
                break
            if prog["done"] is not None and prog["kernel"] == "idle":
                break
            time.sleep(0.5)
        else:
            stuck = self._stuck_cell(prog["cells"])
            nb = self.current
            if screenshot_on_timeout is not None:
                try:
                    self.screenshot(screenshot_on_timeout)
                except Exception:  # the timeout message matters more than the picture
                    pass
            self._interrupt()
            raise NotebookTimeout(
                f"{nb}: not finished after {timeout_s:.0f} s "
                f"(kernel {prog['kernel']}); stuck at {stuck}. Raise timeout_s in the "
                "notebook metadata radjepa_lab.e2e only if the smoke profile really needs it."
            )
        self.wait_settled(timeout_s=max(5.0, deadline - time.monotonic()))
        prog = self.progress()
        unexecuted = [
            f"cell #{c['i']} `{c['src'][:80]}`"
            for c in prog["cells"]
            if c["type"] == "code" and not c["empty"] and c["count"] is None
        ]
        snap = self.snapshot()
        self.result = RunResult(
            path=self.current,
            seconds=time.monotonic() - t0,
            completed=prog["done"] is not None,
            unexecuted=unexecuted,
            images=snap["images"],
            widgets=snap["widgets"],
            findings=self.findings(),
        )
        return self.result

    @staticmethod
    def _stuck_cell(cells: Sequence[dict[str, Any]]) -> str:
        for c in cells:
            if c["type"] == "code" and (c["state"] == "running" or c["prompt"] == "[*]:"):
                return f"cell #{c['i']} `{c['src'][:100]}`"
        return "no running cell (kernel busy outside a cell, or still starting)"

    def _interrupt(self) -> None:
        try:
            self.page.evaluate(
                """async () => { const k = window.__e2e.panel.sessionContext.session.kernel;
                   if (k) await k.interrupt(); }"""
            )
        except Exception:
            pass
        self.close_current()

    def snapshot(self) -> dict[str, Any]:
        return self.page.evaluate(_JS_SNAPSHOT, CONTROL_SELECTOR)

    def wait_settled(self, quiet_s: float = 1.0, timeout_s: float = 30.0) -> None:
        """Wait until the kernel is idle and the rendered DOM stops changing for ``quiet_s``.

        Widget views and images render asynchronously after the kernel goes idle.
        """
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if snap != last or snap["kernel"] != "idle" or snap["pendingImages"]:
                last = snap
                stable_since = time.monotonic()
            elif time.monotonic() - stable_since >= quiet_s:
                return
            time.sleep(0.25)

    # -- inspection ----------------------------------------------------------------------------

    def findings(self) -> list[Finding]:
        """Every error a student would see, plus swallowed widget-callback errors."""
        raw = self.page.evaluate(_JS_SCAN)
        out: list[Finding] = []
        for f in raw:
            text = f["text"]
            if f["kind"] in {"error", "traceback", "callback-error"}:
                text = summarize_traceback(text)
            out.append(Finding(f["kind"], f["where"], text, f["cell"], f["source"]))
        # An interact() error reaches the page twice: rendered in the widget Output and as a
        # comm_msg kernel message. Keep the rendered one (it names the cell).
        shown = {f.text for f in out if f.where == "widget output"}
        return [f for f in out if not (f.kind == "callback-error" and f.text in shown)]

    def screenshot(self, path: Path) -> Path:
        """Full notebook screenshot: the page is resized to the notebook's scroll height.

        JupyterLab scrolls inside the notebook panel, so Playwright's full_page=True would
        only capture the viewport.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        scroll_top = """() => { const n = window.__e2e.panel.content.node;
               const outer = n.classList.contains('jp-WindowedPanel-outer') ? n
                   : (n.querySelector('.jp-WindowedPanel-outer') || n);
               outer.scrollTop = 0;
               return Math.max(0, outer.scrollHeight - outer.clientHeight); }"""
        extra = self.page.evaluate(scroll_top)
        height = min(16000, VIEWPORT["height"] + int(extra) + 40)
        self.page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        try:
            self.page.wait_for_timeout(300)
            self.page.evaluate(scroll_top)
            self.page.wait_for_timeout(100)
            self.page.screenshot(path=str(path))
        finally:
            self.page.set_viewport_size(VIEWPORT)
        return path

    def save_executed_copy(self, dest: Path) -> None:
        """Copy the autosaved, executed notebook from the temp workspace (for debugging)."""
        assert self.current is not None
        self.page.evaluate("async () => { await window.__e2e.panel.context.save(); }")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.server.root / self.current, dest)

    # -- interactions --------------------------------------------------------------------------

    def panel(self) -> Any:
        """Locator of the open notebook panel (all queries are scoped to it)."""
        pid = self.page.evaluate("() => window.__e2e.panel.id")
        return self.page.locator(f'[id="{pid}"]')

    def control_labels(self) -> list[str]:
        """Descriptions of every rendered control (for helpful failure messages)."""
        return [
            t.strip()
            for t in self.panel()
            .locator(CONTROL_SELECTOR)
            .locator(".widget-label")
            .all_inner_texts()
        ]

    def find_control(self, label: str, control: str = "auto") -> tuple[str, Any]:
        """First control whose description matches ``label`` (regex, case-insensitive).

        Returns (kind, locator). Raises LabError listing the available labels otherwise.
        """
        kinds = {
            "slider": ".jupyter-widgets.widget-slider",
            "dropdown": ".jupyter-widgets.widget-dropdown",
            "toggle": ".jupyter-widgets.widget-toggle-buttons",
            "radio": ".jupyter-widgets.widget-radio",
        }
        order = list(kinds) if control == "auto" else [control]
        pattern = re.compile(label, re.IGNORECASE)
        for kind in order:
            if kind not in kinds:
                raise LabError(f"unknown control kind {kind!r}; use one of {sorted(kinds)}")
            loc = (
                self.panel()
                .locator(kinds[kind])
                .filter(has=self.page.locator(".widget-label", has_text=pattern))
            )
            if loc.count():
                return kind, loc.first
        raise LabError(
            f"{self.current}: no {control} widget whose label matches /{label}/i; "
            f"rendered controls: {self.control_labels()}. Fix the label regex in the notebook "
            "metadata radjepa_lab.e2e.interactions or in DEFAULT_EXPECTATIONS."
        )

    @staticmethod
    def cell_of(control: Any) -> Any:
        """The notebook cell that contains ``control`` (its output holds the figure)."""
        return control.locator(
            "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' jp-Cell ')][1]"
        )

    @staticmethod
    def image_signature(scope: Any) -> list[str]:
        """Short hashes of every rendered <img> under ``scope`` (figure identity)."""
        srcs = scope.locator(".jp-OutputArea-output img").evaluate_all(
            "els => els.filter(e => e.complete && e.naturalWidth > 0).map(e => e.src)"
        )
        return [hashlib.sha1(s.encode()).hexdigest()[:12] for s in srcs]

    def move_slider(self, slider: Any, steps: int = 3) -> tuple[str, str]:
        """Move a slider with the keyboard like a student would; returns (before, after).

        Goes right, or left when already at the maximum.
        """
        handle = slider.locator(".noUi-handle").first
        readout = slider.locator(".widget-readout")

        def value() -> str:
            if readout.count():
                return readout.first.inner_text().strip()
            return handle.get_attribute("aria-valuenow") or ""

        before = value()
        try:
            at_max = float(handle.get_attribute("aria-valuenow") or "nan") >= float(
                handle.get_attribute("aria-valuemax") or "nan"
            )
        except ValueError:
            at_max = False
        key = "ArrowLeft" if at_max else "ArrowRight"
        handle.focus()
        for _ in range(steps):
            self.page.keyboard.press(key)
        after = value()
        if after == before:
            raise LabError(f"{self.current}: slider did not move (value stays {before})")
        return before, after

    def pick_other_option(self, kind: str, control: Any) -> tuple[str, str]:
        """Select a different option in a dropdown / toggle buttons / radio group."""
        if kind == "dropdown":
            select = control.locator("select")
            before = select.input_value()
            options = select.locator("option").evaluate_all("els => els.map(e => e.value)")
            others = [o for o in options if o != before]
            if not others:
                raise LabError(f"{self.current}: dropdown has a single option {options}")
            select.select_option(others[0])
            return before, others[0]
        if kind == "toggle":
            buttons = control.locator("button")
            active = control.locator("button.mod-active")
            before = active.first.inner_text() if active.count() else ""
            for i in range(buttons.count()):
                b = buttons.nth(i)
                if "mod-active" not in (b.get_attribute("class") or ""):
                    after = b.inner_text()
                    b.click()
                    return before, after
            raise LabError(f"{self.current}: toggle buttons offer no other option")
        if kind == "radio":
            radios = control.locator("input[type=radio]")
            for i in range(radios.count()):
                if not radios.nth(i).is_checked():
                    radios.nth(i).check()
                    return "", str(i)
            raise LabError(f"{self.current}: radio buttons offer no other option")
        raise LabError(f"pick_other_option: {kind!r} is not a selector kind")

    def interact(self, label: str, control: str = "auto", timeout_s: float = 60.0) -> dict:
        """Change one control and report whether the figure in its cell changed.

        Returns {"kind", "before", "after", "images_before", "images_after", "changed"}.
        The wait ends as soon as new, different images are rendered and the page is settled.
        """
        kind, loc = self.find_control(label, control)
        # `changed` is False when the callback raised (its figure is replaced by the error);
        # callers check findings() first for that case.
        loc.scroll_into_view_if_needed()
        self.wait_settled(quiet_s=0.5, timeout_s=10)
        # The figure normally lives in the control's own cell (interact / VBox + Output);
        # fall back to the whole notebook when the Output is displayed in another cell.
        cell = self.cell_of(loc)
        if not self.image_signature(cell):
            cell = self.panel()
        sig_before = self.image_signature(cell)
        if kind == "slider":
            before, after = self.move_slider(loc)
        else:
            before, after = self.pick_other_option(kind, loc)
        deadline = time.monotonic() + timeout_s
        sig_after = sig_before
        n_findings = len(self.findings())
        polls = 0
        while time.monotonic() < deadline:
            sig_after = self.image_signature(cell)
            if sig_after and sig_after != sig_before:
                break
            polls += 1
            if polls % 4 == 0 and len(self.findings()) > n_findings:
                break  # the callback raised: no point waiting for a new figure
            time.sleep(0.25)
        self.wait_settled(timeout_s=max(5.0, deadline - time.monotonic()))
        sig_after = self.image_signature(cell)
        return {
            "kind": kind,
            "before": before,
            "after": after,
            "images_before": sig_before,
            "images_after": sig_after,
            "changed": bool(sig_after) and sig_after != sig_before,
        }


def format_findings(findings: Iterable[Finding]) -> str:
    """One finding per line, for assertion messages."""
    return "\n".join(f"  - {f}" for f in findings)
