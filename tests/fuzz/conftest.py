"""Hypothesis budget for the fuzz suite: bounded so `make test` stays fast, reproducible in CI.

``RADJEPA_FUZZ_EXAMPLES`` raises the budget for a long local fuzzing session and
``RADJEPA_FUZZ_RANDOM=1`` draws fresh examples instead of the derandomized CI set.
No example database is written (nothing lands in the repo).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))  # corpus, guards

settings.register_profile(
    "radjepa-lab",
    max_examples=int(os.environ.get("RADJEPA_FUZZ_EXAMPLES", "40")),
    deadline=None,  # wall-clock hangs are caught by guards.time_limit per example instead
    derandomize=os.environ.get("RADJEPA_FUZZ_RANDOM", "") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile("radjepa-lab")
