"""Shared fixtures for the graphnn test suite (keep this file small)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test: failures reproduce exactly."""
    return np.random.default_rng(1234)


@pytest.fixture
def torch_float64():
    """torch's default dtype float64 for one test, restored after it (set at a module's
    import it leaks into every module collected later)."""
    import torch
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
