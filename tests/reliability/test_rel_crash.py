"""Crash safety: SIGKILL a CLI pretraining run again and again (once in the middle of a
checkpoint write), resume each time, and end with exactly the uninterrupted run. Also a
NaN loss mid-run, and a metrics file cut mid-line."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from guards import time_limit

from radjepa_lab.checkpoints import load_checkpoint
from radjepa_lab.cli import main
from radjepa_lab.config import apply_overrides
from radjepa_lab.errors import TrainingError
from radjepa_lab.presets import get_preset
from radjepa_lab.train import pretrain

SETS = ["steps=90", "ckpt_every=10", "log_every=5", "n_train=32", "monitor_batch=16"]
COMPARED = ("step", "loss", "lr", "wd", "momentum", "rankme", "feat_std", "ctx_tokens",
            "tgt_tokens")
LAUNCH_TIMEOUT_S = 180

# Runs the CLI, but SIGKILLs itself inside os.fsync of the N-th checkpoint temp file, i.e.
# after the bytes are written and before os.replace: the worst moment to die.
KILL_IN_WRITE = """
import os, signal, sys
from radjepa_lab.cli import main
real, seen = os.fsync, [0]
def fsync(fd):
    if ".checkpoint.pt.tmp" in os.readlink(f"/proc/self/fd/{fd}"):  # checkpoint writes only
        seen[0] += 1
        if seen[0] == int(os.environ["KILL_AT_TMP_WRITE"]):
            os.kill(os.getpid(), signal.SIGKILL)
    return real(fd)
os.fsync = fsync
sys.exit(main(sys.argv[1:]))
"""


def cli_args(out: Path, resume: bool) -> list[str]:
    args = ["pretrain", "--preset", "smoke", "--out", str(out), "--no-progress"]
    for s in SETS:
        args += ["--set", s]
    return args + (["--resume"] if resume else [])


def config():
    return apply_overrides(get_preset("smoke"), SETS)


def logged_rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                pass
    return rows


def launch(out: Path, resume: bool, code: str | None = None, env: dict | None = None
           ) -> subprocess.Popen:
    cmd = [sys.executable] + (["-c", code] if code else ["-m", "radjepa_lab"])
    with open(out.parent / f"{out.name}.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(cmd + cli_args(out, resume), stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def kill_after_step(proc: subprocess.Popen, out: Path, step: int) -> int:
    """SIGKILL ``proc`` once metrics show ``step``; returns the last step it logged."""
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = logged_rows(out)
        if rows and rows[-1]["step"] >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return rows[-1]["step"]
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before step {step}; see {out}.log:\n"
                        + (out.parent / f"{out.name}.log").read_text()[-2000:])
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no progress to step {step} within {LAUNCH_TIMEOUT_S} s")


def temp_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if "tmp" in p.name)


def assert_same_run(state: dict, ref: dict, rows: list[dict], ref_rows: list[dict]) -> None:
    assert state["step"] == ref["step"]
    for key in ("encoder", "target_encoder", "predictor"):
        for name, t in ref[key].items():
            assert torch.equal(state[key][name], t), f"{key}.{name} differs"
    for sa, sb in zip(state["optimizer"]["state"].values(), ref["optimizer"]["state"].values(),
                      strict=True):
        for k in sb:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), f"optimizer {k}"
    a = [{k: r.get(k) for k in COMPARED} for r in rows]
    b = [{k: r.get(k) for k in COMPARED} for r in ref_rows]
    assert a == b


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    """The uninterrupted run, in this process (same code, seed and thread count)."""
    out = tmp_path_factory.mktemp("reference")
    res = pretrain(config(), out, progress=False)
    return load_checkpoint(res.checkpoint), logged_rows(out)


def test_sigkill_three_times_then_resume_equals_uninterrupted(
        tmp_path: Path, reference: tuple[dict, list[dict]]) -> None:
    out = tmp_path / "run"
    steps_seen = []

    # 1) kill at an arbitrary point between checkpoints
    last = kill_after_step(launch(out, resume=False), out, 27)
    state = load_checkpoint(out / "checkpoint.pt")
    assert 20 <= state["step"] <= last and state["step"] % 10 == 0
    steps_seen.append(state["step"])

    # 2) kill inside the second checkpoint write of the resumed run
    proc = launch(out, resume=True, code=KILL_IN_WRITE, env={"KILL_AT_TMP_WRITE": "2"})
    proc.wait(LAUNCH_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    assert temp_files(out), "the kill did not land inside a checkpoint write"
    state = load_checkpoint(out / "checkpoint.pt")  # the previous checkpoint, intact
    assert state["step"] == steps_seen[-1] + 10
    steps_seen.append(state["step"])

    # 3) kill again a few steps after a log line, mid-window
    last = kill_after_step(launch(out, resume=True), out, steps_seen[-1] + 17)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] > steps_seen[-1] and state["step"] <= last
    steps_seen.append(state["step"])
    for key in ("encoder", "target_encoder", "predictor"):
        assert all(torch.isfinite(v).all() for v in state[key].values())

    # 4) resume to the end
    proc = launch(out, resume=True)
    assert proc.wait(LAUNCH_TIMEOUT_S) == 0, (out.parent / "run.log").read_text()[-3000:]
    assert steps_seen == sorted(set(steps_seen)), steps_seen  # every resume moved forward
    assert temp_files(out) == [], "temp files left behind after a crash + resume"
    ref_state, ref_rows = reference
    assert_same_run(load_checkpoint(out / "checkpoint.pt"), ref_state, logged_rows(out),
                    ref_rows)


# ----------------------------------------------------------------------------- NaN and torn files


@pytest.fixture(scope="module")
def reference20(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp("reference20")
    cfg = get_preset("smoke")
    cfg.steps, cfg.ckpt_every = 20, 5
    res = pretrain(cfg, out, progress=False)
    return load_checkpoint(res.checkpoint), logged_rows(out)


def test_nan_loss_stops_cleanly_keeps_last_good_checkpoint_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        reference20: tuple[dict, list[dict]]) -> None:
    import radjepa_lab.train as train

    real, calls = train.jepa_loss, [0]

    def poisoned(*args, **kw):
        calls[0] += 1
        loss = real(*args, **kw)
        return loss * float("nan") if calls[0] == 14 else loss  # 0-based step 13

    monkeypatch.setattr(train, "jepa_loss", poisoned)
    out = tmp_path / "nan"
    args = ["pretrain", "--preset", "smoke", "--out", str(out), "--no-progress",
            "--set", "steps=20", "--set", "ckpt_every=5"]
    with time_limit(120, "NaN run"):
        rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "NaN/Inf at step 13" in err and str(out / "checkpoint.pt") in err, err
    assert len(err.strip().splitlines()) == 1  # one clear line, no traceback
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 10  # the last good one, not overwritten after the NaN
    for key in ("encoder", "target_encoder", "predictor"):
        assert all(torch.isfinite(v).all() for v in state[key].values())
    rows = logged_rows(out)
    assert [r["step"] for r in rows] == [1, 5, 10]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert temp_files(out) == []

    with pytest.raises(TrainingError):  # the library raises the kit type
        cfg = apply_overrides(get_preset("smoke"), ["steps=20", "ckpt_every=5"])
        calls[0] = 0
        pretrain(cfg, tmp_path / "lib", progress=False)

    monkeypatch.setattr(train, "jepa_loss", real)  # the glitch is gone: resume and finish
    assert main(args + ["--resume"]) == 0
    ref_state, ref_rows = reference20
    assert_same_run(load_checkpoint(out / "checkpoint.pt"), ref_state, logged_rows(out), ref_rows)


def test_resume_survives_a_metrics_line_cut_by_a_crash(
        tmp_path: Path, reference20: tuple[dict, list[dict]]) -> None:
    cfg = get_preset("smoke")
    cfg.steps, cfg.ckpt_every = 20, 5
    out = tmp_path / "torn"
    pretrain(cfg, out, progress=False, max_steps=10)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 12, "loss": 0.4')  # killed while writing the next line
    res = pretrain(cfg, out, progress=False, resume=True)
    ref_state, ref_rows = reference20
    assert_same_run(load_checkpoint(res.checkpoint), ref_state, logged_rows(out), ref_rows)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone, not kept


def test_stale_temp_files_of_dead_writers_are_swept(tmp_path: Path) -> None:
    """A temp file left by a killed writer disappears at the next checkpoint; one of a live
    writer (another process) is left alone."""
    from radjepa_lab.checkpoints import save_checkpoint

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".checkpoint.pt.tmp-{int(dead.stdout)}"
    live = tmp_path / f".checkpoint.pt.tmp-{os.getppid()}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"someone else's write in progress")
    save_checkpoint(tmp_path / "checkpoint.pt", {"format": "radjepa_lab", "step": 1})
    assert not stale.exists() and live.exists()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
