"""Shared fixtures for the graphnn test suite (keep this file small)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test: failures reproduce exactly."""
    return np.random.default_rng(1234)
