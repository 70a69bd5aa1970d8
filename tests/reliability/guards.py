"""Guards shared by the reliability and fuzz suites: a per-case time limit, a network block
and a peak-RSS probe.

Both are plain context managers so hypothesis tests can use them inside each example (function
fixtures would be shared across examples).
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def vm_kib(key: str) -> int:
    """A /proc/self/status memory figure in KiB (``VmRSS`` now, ``VmHWM`` peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class CaseTimeout(AssertionError):
    """A case ran past its time limit (a hang is a failure, not a skip)."""


@contextmanager
def time_limit(seconds: float, what: str = "case") -> Iterator[None]:
    """Fail with :class:`CaseTimeout` if the body runs longer than ``seconds`` (SIGALRM)."""

    def _fire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"{what} did not finish within {seconds:g} s (hang?)")

    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class NetworkBlocked(AssertionError):
    """Raised instead of connecting anywhere but loopback."""


def _is_loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:  # a host name other than localhost would need DNS: refuse it
        return False


@contextmanager
def outbound_network_blocked(attempts: list[str] | None = None) -> Iterator[list[str]]:
    """``socket.connect``/``connect_ex``/``sendto`` to a non-loopback address raise
    :class:`NetworkBlocked`; so does name resolution of anything but localhost. Unix sockets
    and loopback stay open (DataLoader workers and local IPC keep working). Attempts are
    recorded, so a test can assert none happened even if a library swallowed the error."""
    seen: list[str] = [] if attempts is None else attempts
    real = {n: getattr(socket.socket, n) for n in ("connect", "connect_ex", "sendto")}
    real_gai = socket.getaddrinfo

    def guard(name: str):
        def wrapped(self: socket.socket, *args: Any) -> Any:
            address = args[-1]
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
                seen.append(f"{name} {address!r}")
                raise NetworkBlocked(f"outbound network access attempted: {name}({address!r})")
            return real[name](self, *args)

        return wrapped

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if not _is_loopback(host if not isinstance(host, bytes) else host.decode()):
            seen.append(f"getaddrinfo {host!r}")
            raise NetworkBlocked(f"outbound name resolution attempted: {host!r}")
        return real_gai(host, *args, **kw)

    for n in real:
        setattr(socket.socket, n, guard(n))
    socket.getaddrinfo = getaddrinfo
    try:
        yield seen
    finally:
        for n, f in real.items():
            setattr(socket.socket, n, f)
        socket.getaddrinfo = real_gai
