"""A run's folder and how a run ends: the folder lock, the refusal to overwrite, Ctrl-C.

:func:`train.pretrain <radjepa_lab.train.pretrain>` writes ``checkpoint.pt`` and
``metrics.jsonl`` into one folder. This module keeps that folder safe:

* :func:`run_folder` refuses a folder that already holds a run unless the caller resumes it or
  asks to overwrite it, turns "``--out`` is a file / not writable" into a kit error, and holds
  an exclusive lock on the folder for the whole run, so a second run into the same folder fails
  at once instead of interleaving checkpoints. The lock is ``fcntl.flock`` on
  ``.radjepa_lab.lock``: the kernel releases it when the process ends, however it ends (a
  SIGKILLed run never leaves a stale lock). Under torchrun only rank 0 writes, so only rank 0
  locks.
* :class:`StopSignals` turns SIGINT (Ctrl-C, a notebook's "interrupt kernel") and SIGTERM into a
  clean stop: the trainer finishes the current step, saves a resumable checkpoint and raises
  :class:`~radjepa_lab.errors.TrainingInterrupted`. DataLoader workers ignore SIGINT
  (:func:`worker_init`): Ctrl-C reaches the whole process group, and a worker that died of it
  would take the batch it was loading with it; the main process decides and stops them.
* :func:`resume_changes` decides whether a resumed run may continue with the config it is
  given: what it changes in the checkpoint's config, each change allowed or refused.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from radjepa_lab.config import NETWORK_FIELDS, RUNTIME_FIELDS, TrainConfig, config_diff
from radjepa_lab.errors import CheckpointError, ConfigError, OutputError, TrainingInterrupted

__all__ = ["LOCK_NAME", "StopSignals", "resume_changes", "run_folder", "worker_init"]

LOCK_NAME = ".radjepa_lab.lock"
# File descriptors of the locks this process holds; forked DataLoader workers close their
# copies, so a worker outliving a killed run never keeps its folder locked.
_HELD_FDS: set[int] = set()


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the trainer's DataLoaders: ignore SIGINT, drop inherited locks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_FDS.clear()


def _lock(folder: Path) -> int:
    """An exclusive, non-blocking lock on ``folder``; OutputError naming it when another run
    holds it. Returns the descriptor to unlock."""
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError.from_os(e, folder, "the run's lock file") from e
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; the run is not locked
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputError(
                f"{folder}: another run is writing to this folder right now (it holds "
                f"{path}); wait for it to finish, stop it, or choose another output folder."
            ) from e
        raise OutputError.from_os(e, folder, "the run's lock file") from e
    _HELD_FDS.add(fd)
    return fd


def _unlock(fd: int) -> None:
    _HELD_FDS.discard(fd)
    os.close(fd)  # closing the last descriptor releases the flock


def _existing(folder: Path, names: tuple[str, ...]) -> list[str]:
    """Which of the run files ``names`` ``folder`` already holds."""
    return [n for n in names if (folder / n).exists()]


@contextmanager
def run_folder(folder: Path, names: tuple[str, ...], resume: bool, overwrite: bool,
               lock: bool = True) -> Iterator[Path]:
    """Create, check and lock a run folder for the duration of the ``with`` block.

    ``names`` are the files a run writes (checkpoint, metrics). A folder that holds one of
    them is refused unless ``resume`` (continue it) or ``overwrite`` (delete them now and start
    afresh). ``lock=False`` (DDP ranks other than 0) checks nothing and writes nothing.
    """
    if not lock:
        yield folder
        return
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder; choose another output folder "
                          "for the run.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError.from_os(e, folder, "the run folder") from e
    fd = _lock(folder)
    try:
        found = _existing(folder, names)
        if found and not (resume or overwrite):
            raise OutputError(
                f"{folder}: already holds a run ({', '.join(found)}); refusing to overwrite "
                "it. Continue it with --resume (pretrain(..., resume=True)), start it afresh "
                "with --overwrite (overwrite=True), or choose another output folder.")
        if overwrite and not resume:
            for name in found:
                (folder / name).unlink()
        yield folder
    finally:
        _unlock(fd)


_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    """SIGINT/SIGTERM handlers for the length of a ``with`` block (previous handlers restored
    on exit; installed only in the main thread, where Python delivers signals).

    Inside the step loop (``in_loop`` set by the trainer) the first signal only sets
    :attr:`signum`; the loop finishes its step, saves and raises. Before the loop (model
    building, data caching) or on a second signal the handler raises
    :class:`TrainingInterrupted` at once, naming the last checkpoint on disk (:attr:`saved`).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_loop = False
        self.saved: tuple[int, Path] | None = None  # (step, path) of the last checkpoint
        self._old: dict[int, Any] = {}

    @staticmethod
    def name(signum: int) -> str:
        return _NAMES.get(signum, f"signal {signum}")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in _NAMES:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = signum
        if first and self.in_loop:
            return  # the loop stops after this step and saves
        step, path = self.saved if self.saved else (0, None)
        kept = (f"the last checkpoint (step {step}) is {path}" if path
                else "no checkpoint was written")
        raise TrainingInterrupted(
            f"interrupted by {self.name(signum)} {'again ' if not first else ''}before a step "
            f"could be saved; {kept}.", step, path, signum)


def _fmt_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())


def resume_changes(saved: TrainConfig, cfg: TrainConfig, allow: Iterable[str],
                   where: Any) -> dict[str, tuple[Any, Any]]:
    """What a resumed run changes in the checkpoint's config, once every change is allowed.

    A model or objective change is always refused (the weights cannot load into another
    architecture: ``model.*`` and :data:`~radjepa_lab.config.NETWORK_FIELDS`); runtime fields
    (:data:`~radjepa_lab.config.RUNTIME_FIELDS`) may change freely; any other change must be
    in ``allow``. Raises CheckpointError / ConfigError listing old -> new.
    """
    changes = config_diff(saved, cfg)
    model = {k: v for k, v in changes.items() if k.startswith("model.") or k in NETWORK_FIELDS}
    if model:
        raise CheckpointError(
            f"{where}: cannot resume with another model ({_fmt_changes(model)}); its weights "
            "only load into the model they were trained as. Resume with the original model "
            "settings, or start a new run in another folder.")
    free = set(allow) | set(RUNTIME_FIELDS)
    refused = {k: v for k, v in changes.items() if k not in free}
    if refused:
        hints = " ".join(f"--steps {b}" if k == "steps" else f"--set {shlex.quote(f'{k}={b!r}')}"
                         for k, (_, b) in refused.items())
        raise ConfigError(
            f"{where} was trained with another config: {_fmt_changes(refused)}. To resume the "
            "run as it was, repeat the original run's options; to change these fields on "
            f"purpose, allow each explicitly: give them on the resume command ({hints}) or "
            f"pass pretrain(..., allow_changes={set(refused)}).")
    return changes
