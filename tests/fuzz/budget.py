"""How many examples each fuzz test asks for, and how many it actually tried.

``STOCKBATCH_FUZZ_EXAMPLES`` sets hypothesis's ``max_examples`` for every test of
this folder (default :data:`DEFAULT_EXAMPLES`, small enough for the normal suite).
A test calls :func:`tried` once per example body it runs; the folder's conftest
prints the totals at the end of the session.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, Phase, settings

DEFAULT_EXAMPLES = 150

COUNTS: Counter[str] = Counter()
"""Example bodies run per test name (shrinking included, so a failure shows up too)."""


def examples() -> int:
    """The example budget per test (``STOCKBATCH_FUZZ_EXAMPLES``, else the default)."""
    value = os.environ.get("STOCKBATCH_FUZZ_EXAMPLES", "")
    return int(value) if value.strip() else DEFAULT_EXAMPLES


def fuzz_settings() -> settings:
    """Settings for every fuzz test: the budget, no deadline (a busy 2-core machine), no
    example database (runs are independent), and no health check that would stop a slow
    or filtered strategy at scale."""
    return settings(
        max_examples=examples(),
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )


def tried(test: str) -> None:
    """Count one example body of ``test``."""
    COUNTS[test] += 1
