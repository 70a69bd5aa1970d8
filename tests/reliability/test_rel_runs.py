"""The run folder and how a run ends: an earlier run is never overwritten by accident, a bad
--out (a file, not writable, a full disk) is one line and exit 2, a second run into a locked
folder fails at once, Ctrl-C / SIGTERM save a resumable checkpoint (also with DataLoader
workers) and resuming reaches the uninterrupted run's weights bit for bit, and a resumed run
may change its config only explicitly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from guards import time_limit
from helpers import blob_images, tiny_config
from test_rel_crash import assert_same_run, logged_rows

from radjepa_lab.checkpoints import load_checkpoint
from radjepa_lab.cli import main
from radjepa_lab.config import apply_overrides
from radjepa_lab.errors import ConfigError, OutputError, TrainingInterrupted
from radjepa_lab.monitors import collapse_summary, read_metrics, summarize_history
from radjepa_lab.presets import get_preset
from radjepa_lab.runs import LOCK_NAME, _lock, _unlock
from radjepa_lab.train import pretrain

LAUNCH_TIMEOUT_S = 240


def one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(n in err for n in needles), err


# ----------------------------------------------------------------------------- refusing to overwrite


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = blob_images(16)
    cfg = tiny_config(steps=4, ckpt_every=2)
    first = pretrain(cfg, tmp_path / "run", dataset=data, progress=False, max_steps=2)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(OutputError, match=r"already holds a run \(checkpoint\.pt, metrics\.jsonl\)"
                       r".*--resume.*--overwrite"):
        pretrain(cfg, tmp_path / "run", dataset=data, progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before  # untouched
    (tmp_path / "run" / "checkpoint.pt").unlink()  # a metrics log alone is a run too
    with pytest.raises(OutputError, match=r"already holds a run \(metrics\.jsonl\)"):
        pretrain(cfg, tmp_path / "run", dataset=data, progress=False)
    with pytest.raises(ConfigError, match="contradict"):
        pretrain(cfg, tmp_path / "run", dataset=data, progress=False, resume=True,
                 overwrite=True)
    again = pretrain(cfg, tmp_path / "run", dataset=data, progress=False, overwrite=True)
    assert again.info["start_step"] == 0 and again.steps_done == 4
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert first.history[0]["loss"] == again.history[0]["loss"]  # a fresh start, same seed

    args = ["pretrain", "--preset", "smoke", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 2
    one_line_error(capsys.readouterr().err, "already holds a run", "--resume", "--overwrite")


def test_out_that_is_a_file_or_not_writable_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert main(["pretrain", "--preset", "smoke", "--out", str(a_file), "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, str(a_file), "is a file, not a folder")
    under_file = a_file / "run"
    assert main(["pretrain", "--preset", "smoke", "--out", str(under_file)]) == 2
    one_line_error(capsys.readouterr().err, str(under_file), "cannot write")

    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores modes: make creating files there fail the same way
        real_open = os.open

        def deny(path, *a, **k):  # noqa: ANN001 - mirrors os.open
            if Path(path).parent == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(os, "open", deny)
    assert main(["pretrain", "--preset", "smoke", "--out", str(locked), "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, str(locked), "Permission denied", "writable")


@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch,
                                                where: str) -> None:
    import builtins

    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "checkpoint":
        def no_space(*a, **k):  # noqa: ANN002, ANN003
            raise full

        monkeypatch.setattr(torch, "save", no_space)
        victim = "checkpoint.pt"
    else:
        real_open = builtins.open

        def no_space(file, mode="r", *a, **k):  # noqa: ANN001
            if str(file).endswith("metrics.jsonl") and "a" in mode:
                raise full
            return real_open(file, mode, *a, **k)

        monkeypatch.setattr(builtins, "open", no_space)
        victim = "metrics.jsonl"
    out = tmp_path / "run"
    args = ["pretrain", "--preset", "smoke", "--out", str(out), "--no-progress",
            "--steps", "4", "--set", "monitor_batch=8"]
    with time_limit(120, "full-disk run"):
        assert main(args) == 2
    one_line_error(capsys.readouterr().err, str(out / victim), "No space left", "disk is full")
    assert not [p for p in out.iterdir() if "tmp" in p.name]  # no half-written temp file


# ----------------------------------------------------------------------------- the lock


def test_a_locked_folder_fails_at_once_and_every_exit_releases_the_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    fd = _lock(run)  # another run holds the folder
    try:
        t0 = time.perf_counter()
        with pytest.raises(OutputError, match=rf"{run}: another run is writing to this folder"):
            pretrain(tiny_config(steps=2), run, dataset=blob_images(16), progress=False)
        assert time.perf_counter() - t0 < 10
    finally:
        _unlock(fd)
    # a run that fails mid-way (NaN images) releases the lock on its way out
    bad = [{"img": torch.full((1, 32, 32), float("nan"))} for _ in range(16)]
    with pytest.raises(Exception, match="NaN"):
        pretrain(tiny_config(steps=2), run, dataset=bad, progress=False)
    _unlock(_lock(run))
    res = pretrain(tiny_config(steps=2), run, dataset=blob_images(16), progress=False)
    assert res.steps_done == 2 and (run / LOCK_NAME).exists()
    _unlock(_lock(run))  # released after a normal return


def _launch(out: Path, extra: list[str], log: Path, **popen) -> subprocess.Popen:
    args = ["pretrain", "--preset", "smoke", "--out", str(out), "--no-progress", *extra]
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "radjepa_lab", *args], stdout=f,
                                stderr=subprocess.STDOUT, **popen)


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int, log: Path) -> int:
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = [r for r in logged_rows(out) if "loss" in r]
        if rows and rows[-1]["step"] >= step:
            return rows[-1]["step"]
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before step {step}:\n"
                        + log.read_text()[-3000:])
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no progress to step {step} within {LAUNCH_TIMEOUT_S} s")


def test_a_second_process_into_a_running_folder_fails_at_once(tmp_path: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "run.log"
    first = _launch(out, ["--set", "steps=100000", "--set", "n_train=32"], log)
    try:
        _wait_for_step(first, out, 1, log)
        t0 = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "radjepa_lab", "pretrain", "--preset", "smoke", "--out",
             str(out), "--no-progress", "--resume"], capture_output=True, text=True,
            timeout=LAUNCH_TIMEOUT_S)
        assert second.returncode == 2
        one_line_error(second.stderr, str(out), "another run is writing to this folder")
        assert time.monotonic() - t0 < 60  # import time only: it did not wait for the lock
        assert first.poll() is None  # the first run is unharmed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    # the kernel released the killed run's lock: resuming works at once
    _unlock(_lock(out))


# ----------------------------------------------------------------------------- Ctrl-C and SIGTERM

SETS = ["steps=60", "ckpt_every=10", "log_every=5", "n_train=32", "monitor_batch=16",
        "num_workers=2", "cache_data=False"]  # workers load every batch


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp("reference")
    res = pretrain(apply_overrides(get_preset("smoke"), SETS), out, progress=False)
    return load_checkpoint(res.checkpoint), logged_rows(out)


@pytest.mark.parametrize("sig, rc, whom", [
    (signal.SIGINT, 130, "process group"),  # Ctrl-C in a terminal reaches the workers too
    (signal.SIGTERM, 143, "main process"),  # kill PID, a scheduler's stop
])
def test_a_signal_saves_a_resumable_checkpoint_and_resume_is_bit_exact(
        tmp_path: Path, reference: tuple[dict, list[dict]], sig: int, rc: int,
        whom: str) -> None:
    out, log = tmp_path / "run", tmp_path / "run.log"
    sets = [x for s in SETS for x in ("--set", s)]
    proc = _launch(out, sets, log, start_new_session=True)
    _wait_for_step(proc, out, 23, log)  # between checkpoints (20, 30), inside a log window
    if whom == "process group":
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    assert proc.wait(LAUNCH_TIMEOUT_S) == rc, log.read_text()[-3000:]
    err = log.read_text()
    name = "SIGINT (Ctrl-C)" if sig == signal.SIGINT else "SIGTERM"
    one_line_error(err, f"interrupted by {name} at step", "saved at step", "--resume`")
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert f"at step {step}: saved at step {step} ({out / 'checkpoint.pt'})" in err
    assert step >= 23, step  # the step it was at, not the last periodic checkpoint (20)
    resume_cmd = err.split("resume with `")[1].split("`")[0].split()
    assert resume_cmd[0] == "radjepa-lab" and resume_cmd[-1] == "--resume"
    assert not [p for p in out.iterdir() if "tmp" in p.name]

    log.write_text("")
    proc = _launch(out, resume_cmd[2:-1] + ["--resume"], log)  # the printed command
    assert proc.wait(LAUNCH_TIMEOUT_S) == 0, log.read_text()[-3000:]
    ref_state, ref_rows = reference
    assert_same_run(load_checkpoint(out / "checkpoint.pt"), ref_state, logged_rows(out),
                    ref_rows)


class SignalOnRead(torch.utils.data.Dataset):
    """``data``, sending ``sig`` to this process while the batch of 0-based ``step`` is read (an
    uncached run reads the monitor images first, then ``batch_size`` items per step)."""

    def __init__(self, data: list, cfg, step: int, sig: int) -> None:  # noqa: ANN001
        self.data, self.sig, self.reads = data, sig, 0
        self.at = cfg.monitor_batch + step * cfg.batch_size + 1

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), self.sig)
        return self.data[i]


def test_library_interrupt_mid_window_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """In-process: SIGINT while step 7's batch is drawn (logs at 1, 4, 6, 8; checkpoints at 6,
    12): pretrain saves step 7 with its open logging window, raises TrainingInterrupted and
    restores the caller's handler; the resumed run logs and ends exactly as the full run."""
    data = blob_images(16)
    cfg = tiny_config(steps=12, ckpt_every=6, log_every=4, cache_data=False, monitor_batch=16)
    full = pretrain(cfg, tmp_path / "full", dataset=data, progress=False)
    old = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="at step 7: saved at step 7") as info:
        pretrain(cfg, tmp_path / "run", dataset=SignalOnRead(data, cfg, 6, signal.SIGINT),
                 progress=False)
    assert signal.getsignal(signal.SIGINT) is old  # the caller's handler is back
    exc = info.value
    assert (exc.signum, exc.step) == (signal.SIGINT, 7)
    assert exc.checkpoint == tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(exc.checkpoint)["step"] == 7
    rest = pretrain(cfg, tmp_path / "run", dataset=data, progress=False, resume=True)
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] \
        == [(r["step"], r["loss"]) for r in full.history]
    for k, v in full.target_encoder.state_dict().items():
        assert torch.equal(v, rest.target_encoder.state_dict()[k]), k


def test_a_signal_during_the_last_step_lets_the_run_finish(tmp_path: Path) -> None:
    data = blob_images(16)
    cfg = tiny_config(steps=4, ckpt_every=2, cache_data=False, monitor_batch=16)
    res = pretrain(cfg, tmp_path / "run", dataset=SignalOnRead(data, cfg, 3, signal.SIGTERM),
                   progress=False)  # the last step
    assert res.steps_done == 4 and load_checkpoint(res.checkpoint)["step"] == 4


def test_a_signal_before_the_first_step_saves_nothing_and_raises_at_once(tmp_path: Path) -> None:
    class Interrupting:
        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> dict:
            os.kill(os.getpid(), signal.SIGTERM)  # while the dataset is being cached
            time.sleep(5)  # the handler raises here, it does not wait for the caching
            return {"img": torch.zeros(1, 32, 32)}

    t0 = time.perf_counter()
    with pytest.raises(TrainingInterrupted, match="SIGTERM before a step could be saved; no "
                       "checkpoint was written") as info:
        pretrain(tiny_config(steps=4), tmp_path / "run", dataset=Interrupting(), progress=False)
    assert time.perf_counter() - t0 < 4 and info.value.checkpoint is None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    _unlock(_lock(tmp_path / "run"))


# ----------------------------------------------------------------------------- changed config on resume


def test_resume_with_a_changed_config_must_be_explicit_and_is_logged(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = blob_images(16)
    run = tmp_path / "run"
    pretrain(tiny_config(steps=8, ckpt_every=4), run, dataset=data, progress=False, max_steps=4)
    changed = tiny_config(steps=10, ckpt_every=4, lr=5e-4, seed=3)
    with pytest.raises(ConfigError) as info:
        pretrain(changed, run, dataset=data, progress=False, resume=True)
    msg = str(info.value)
    for needle in (str(run / "checkpoint.pt"), "lr 0.001 -> 0.0005", "seed 0 -> 3",
                   "steps 8 -> 10", "allow_changes"):
        assert needle in msg, msg
    with pytest.raises(ConfigError, match=r"\['lrr'\] are not config fields"):
        pretrain(changed, run, dataset=data, progress=False, resume=True, allow_changes={"lrr"})
    with pytest.raises(ConfigError, match="seed 0 -> 3"):  # every change must be allowed
        pretrain(changed, run, dataset=data, progress=False, resume=True,
                 allow_changes={"lr", "steps"})
    res = pretrain(changed, run, dataset=data, progress=False, resume=True,
                   allow_changes={"lr", "seed", "steps"})
    assert res.steps_done == 10 and res.info["config_changes"]["lr"] == (1e-3, 5e-4)
    rows = read_metrics(run / "metrics.jsonl")
    event = [r for r in rows if r.get("event") == "config_change"]
    assert event == [{"step": 4, "event": "config_change",
                      "changes": {"lr": [1e-3, 5e-4], "seed": [0, 3], "steps": [8, 10]}}]
    assert rows.index(event[0]) == 4 and rows == res.history  # after step 4's row
    # every metrics reader of the kit takes the event record in its stride
    assert summarize_history(rows)["steps_logged"] == 10
    assert "RankMe" in collapse_summary(rows)
    from radjepa_lab.viz import plot_training_curves

    plot_training_curves(rows)
    assert load_checkpoint(run / "checkpoint.pt")["config"]["lr"] == 5e-4  # the new config
    # runtime-only fields change freely (and are still logged)
    again = tiny_config(steps=12, ckpt_every=4, lr=5e-4, seed=3, num_workers=1)
    res = pretrain(again, run, dataset=data, progress=False, resume=True,
                   allow_changes={"steps"})
    assert set(res.info["config_changes"]) == {"steps", "num_workers"}


def test_cli_resume_counts_set_and_steps_as_explicit(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    base = ["pretrain", "--preset", "smoke", "--out", str(out), "--no-progress",
            "--set", "steps=6", "--set", "monitor_batch=8", "--set", "ckpt_every=3"]
    assert main(base) == 0
    assert main(base[:6] + ["--resume"]) == 2  # the run's --set options were not repeated
    one_line_error(capsys.readouterr().err, "another config", "steps 6 -> 40",
                   "monitor_batch 8 -> 32", "--steps 40")
    assert main(base + ["--resume", "--steps", "8", "--set", "lr=5e-4"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    event = [r for r in rows if r.get("event") == "config_change"][0]
    assert event["step"] == 6 and set(event["changes"]) == {"steps", "lr"}
    assert [r["step"] for r in rows if "loss" in r][-1] == 8
