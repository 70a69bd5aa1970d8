"""Fixtures of the reliability suite (helpers live in corpus.py and guards.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from guards import outbound_network_blocked


@pytest.fixture
def no_network() -> Iterator[list[str]]:
    """Block outbound network for the test; yields the list of attempts (must stay empty)."""
    with outbound_network_blocked() as attempts:
        yield attempts
    assert attempts == [], f"code reached for the network: {attempts}"


@pytest.fixture(autouse=True)
def _same_threads_in_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subprocesses started by these tests use this process's intra-op thread count, so their
    CPU results can be compared bit for bit with in-process runs."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
