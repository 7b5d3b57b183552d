"""Budgets for the fuzz tests (marker `fuzz`): small in `make test`, large in `make fuzz`.

`make fuzz` sets GRAPHNN_FUZZ=large; every fuzz test reads its example count
through `examples(small, large)` so the two budgets are set in one place.
"""
from __future__ import annotations

import os

LARGE = os.environ.get("GRAPHNN_FUZZ", "").lower() == "large"


def examples(small: int, large: int) -> int:
    """Hypothesis `max_examples` for this run."""
    return large if LARGE else small
