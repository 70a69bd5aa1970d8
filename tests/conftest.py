"""Shared fixtures of the test suite; plain helper functions live in helpers.py.

Figures are drawn off-screen (``MPLBACKEND=Agg``, as the Makefile sets), before any test
module imports matplotlib.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import tiny_model as _tiny_model  # noqa: E402

from radjepa_lab.config import ModelConfig  # noqa: E402


@pytest.fixture
def tiny_model() -> ModelConfig:
    """A fresh copy of the tests' one tiny network config (helpers.tiny_model)."""
    return _tiny_model()


@pytest.fixture
def tiny_encoder(tiny_model: ModelConfig) -> torch.nn.Module:
    """The tiny encoder with the kit's init and seed 0, in eval mode."""
    from radjepa_lab.models import build_encoder

    return build_encoder(tiny_model, seed=0).eval()
