"""Writing a file so that a crash never leaves half of it: the kit's one atomic writer.

Checkpoints, the metrics log and the embedding cache all go through :func:`atomic_write`:
write to a temporary file beside the target, fsync it, ``os.replace`` it over the target, fsync
the folder. A kill at any moment leaves either the old file or the new one, never a torn one;
the temporary file of a writer that died is swept up by the next write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from radjepa_lab.errors import OutputError

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], what: str) -> Path:
    """Call ``write(binary_file)`` and put the result at ``path`` atomically.

    ``what`` names the content for the error a failed write raises (an :class:`OutputError`
    naming the path and the fix: disk full, no permission, a file in the way).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError.from_os(e, path, what) from e
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    _sweep_stale_temps(path)
    return path


def _sweep_stale_temps(path: Path) -> None:
    """Delete temp files of writers that died mid-write (SIGKILL, OOM, power loss); a temp
    file whose process is still alive is another writer's and is left alone."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            if pid != os.getpid():
                os.kill(pid, 0)
                continue  # alive
        except ProcessLookupError:
            pass  # dead writer
        except (ValueError, PermissionError):
            continue  # not ours to judge
        tmp.unlink(missing_ok=True)
