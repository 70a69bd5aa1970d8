"""Security: checkpoints never run code, JupyterLab stays on localhost with a token, and the
whole smoke pipeline works with the outbound network blocked."""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from radjepa_lab.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
KIT_CODE = ("radjepa_lab", "bench", "notebooks")


# ----------------------------------------------------------------------------- weights_only


def _sources() -> list[tuple[str, str]]:
    """(name, python source) of every kit module, bench script and notebook code cell."""
    out = []
    for top in KIT_CODE:
        for p in sorted((REPO / top).rglob("*.py")):
            out.append((str(p.relative_to(REPO)), p.read_text()))
        for p in sorted((REPO / top).rglob("*.ipynb")):
            if ".ipynb_checkpoints" in p.parts:
                continue
            cells = json.loads(p.read_text())["cells"]
            for i, c in enumerate(cells):
                if c["cell_type"] == "code":
                    src = "".join(c["source"])
                    src = "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln
                                    for ln in src.splitlines())
                    out.append((f"{p.relative_to(REPO)}[cell {i}]", src))
    return out


def _unsafe_loads(name: str, src: str) -> list[str]:
    """Calls that can unpickle code: torch.load without weights_only=True, pickle/joblib/dill
    loads, numpy loads with allow_pickle=True."""
    bad = []
    tree = ast.parse(src, name)
    torch_load_aliases = {"torch.load"} | {  # `from torch import load [as x]`
        a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        and n.module == "torch" for a in n.names if a.name == "load"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{name}:{node.lineno}: {ast.unparse(node)[:90]}"
        if dotted in torch_load_aliases or dotted.endswith(".torch.load"):
            v = kw.get("weights_only")
            if not (isinstance(v, ast.Constant) and v.value is True):
                bad.append(where)
        elif dotted in ("pickle.load", "pickle.loads", "joblib.load", "dill.load",
                        "dill.loads", "cloudpickle.load", "cloudpickle.loads",
                        "pickle.Unpickler"):
            bad.append(where)
        elif dotted.endswith(("np.load", "numpy.load")):
            v = kw.get("allow_pickle")
            if isinstance(v, ast.Constant) and v.value is True:
                bad.append(where)
    return bad


def test_every_torch_load_in_the_kit_passes_weights_only_true() -> None:
    sources = _sources()
    calls = sum(s.count("torch.load(") for _, s in sources)
    assert calls >= 2, "expected the kit's checkpoint loaders in the scan"
    bad = [b for name, src in sources for b in _unsafe_loads(name, src)]
    assert bad == [], "unsafe deserialisation:\n" + "\n".join(bad)


def test_the_scanner_catches_unsafe_calls() -> None:
    src = ("import torch, pickle\nimport numpy as np\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
           "np.load(p, allow_pickle=True)\ntorch.load(p, weights_only=True)\n"
           "from torch import load as tl\ntl(p)\n")
    assert len(_unsafe_loads("demo.py", src)) == 5


class _Payload:
    """Unpickling this object runs ``exec`` and writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _malicious_files(tmp_path: Path, marker: Path) -> list[Path]:
    """A bare payload, and payloads hidden inside a kit-looking and an I-JEPA-looking file."""
    from radjepa_lab.config import config_to_dict
    from radjepa_lab.models import build_encoder
    from radjepa_lab.presets import get_preset

    cfg = get_preset("smoke")
    enc = build_encoder(cfg.model).state_dict()
    files = {
        "bare.pt": _Payload(marker),
        "kit_lookalike.pt": {"format": "radjepa_lab", "version": 1, "step": 1,
                             "config": config_to_dict(cfg), "encoder": enc,
                             "target_encoder": enc, "predictor": {}, "extra": _Payload(marker)},
        "ijepa_lookalike.pth.tar": {"encoder": {f"module.{k}": v for k, v in enc.items()},
                                    "target_encoder": enc, "epoch": _Payload(marker)},
    }
    out = []
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        out.append(tmp_path / name)
    return out


def test_malicious_checkpoints_are_refused_and_run_nothing(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from radjepa_lab.checkpoints import load_checkpoint, load_encoder, load_jepa
    from radjepa_lab.cli import main
    from radjepa_lab.config import with_steps
    from radjepa_lab.demo import embed_to_file
    from radjepa_lab.presets import get_preset
    from radjepa_lab.train import pretrain

    marker = tmp_path / "PWNED"
    files = _malicious_files(tmp_path, marker)
    loaders = {
        "train.load_checkpoint": load_checkpoint,
        "models.load_encoder": load_encoder,
        "models.load_encoder(fmt=ijepa)": lambda p: load_encoder(p, fmt="ijepa"),
        "models.load_encoder(fmt=dinov2)": lambda p: load_encoder(p, fmt="dinov2"),
        "notebook.load_jepa": load_jepa,
        "embed_to_file": lambda p: embed_to_file(p, "phantoms:4", tmp_path / "emb",
                                                 progress=False),
    }
    for path in files:
        for what, load in loaders.items():
            with pytest.raises(CheckpointError) as info:
                load(path)
            msg = str(info.value)
            assert str(path) in msg and "weights_only" in msg, (what, msg)
            assert not marker.exists(), f"{what} ran code from {path.name}"
        assert main(["embed", str(path), "phantoms:4", "--out", str(tmp_path / "e")]) == 2
        assert str(path) in capsys.readouterr().err

    run = tmp_path / "resume"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(files[1].read_bytes())
    cfg = get_preset("smoke")
    with_steps(cfg, 2)  # caps the warmup (pretrain checks the config)
    with pytest.raises(CheckpointError):
        pretrain(cfg, run, resume=True, progress=False)
    assert not marker.exists()

    # control: the payload is live; an unsafe load would have run it
    torch.load(files[0], weights_only=False)  # deliberately unsafe, on our own file
    assert marker.read_text() == "code ran"


# ----------------------------------------------------------------------------- make lab


def _make_target(name: str) -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{name}:"))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip())
    return recipe


def test_make_lab_binds_localhost_with_token_auth() -> None:
    from jupyter_server.auth.identity import PasswordIdentityProvider
    from jupyter_server.serverapp import ServerApp

    recipe = " ".join(_make_target("lab"))
    argv = shlex.split(recipe.replace("$(PY)", "python"))
    assert "jupyter" in argv and "lab" in argv, recipe
    flags = [a for a in argv[argv.index("lab") + 1:] if a.startswith("--")]
    lowered = recipe.lower()
    for danger in ("0.0.0.0", "--ip=*", "token=''", 'token=""', "password=''",
                   "disable_check_xsrf", "allow_origin='*'", "allow_remote_access=true",
                   "jupyter_token="):
        assert danger not in lowered, f"make lab: {danger!r} in {recipe!r}"
    for cfg_file in REPO.glob("**/jupyter_*config*"):
        if ".venv" not in cfg_file.parts:
            text = cfg_file.read_text().lower()
            assert "token = ''" not in text and "0.0.0.0" not in text, cfg_file
    app = ServerApp()
    app.parse_command_line(flags)  # jupyter's own parser decides what the flags mean
    assert app.ip in ("127.0.0.1", "localhost", "::1"), app.ip
    ident = PasswordIdentityProvider(parent=app)
    assert ident.token and ident.auth_enabled, "token auth is off"


# ----------------------------------------------------------------------------- no network


def test_smoke_pipeline_runs_with_outbound_network_blocked(tmp_path: Path,
                                                           no_network: list[str]) -> None:
    """phantoms -> pretrain -> embed -> probe, every station, nothing reaches out."""
    import socket

    from radjepa_lab.cli import main
    from radjepa_lab.demo import probe_report

    with pytest.raises(AssertionError, match="outbound"):  # the guard is armed
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    no_network.clear()

    ph, run = tmp_path / "phantoms", tmp_path / "run"
    assert main(["make-phantoms", "--n", "48", "--size", "32", "--out", str(ph)]) == 0
    assert main(["pretrain", "--preset", "smoke", "--data", str(ph / "images"), "--out",
                 str(run), "--no-progress", "--set", "steps=10", "--set", "monitor_batch=16",
                 "--set", "num_workers=2"]) == 0
    assert main(["embed", str(run / "checkpoint.pt"), str(ph / "labels.csv"), "--out",
                 str(tmp_path / "emb")]) == 0
    with np.load(tmp_path / "emb" / "embeddings.npz") as z:
        assert z["pooled"].shape[0] == 48 and np.isfinite(z["pooled"]).all()
    report = probe_report(run / "checkpoint.pt", data="phantoms:64", out_dir=tmp_path / "probe",
                          n_resamples=50, umap_method="pca", seg_epochs=2, progress=False)
    assert report.exists() and (report.parent / "results.json").exists()
