"""Parameter initializers (all take an explicit numpy Generator for reproducibility)."""
from __future__ import annotations

import numpy as np


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out): (in, out) for matrices stored as x @ W; conv (O, C, *K)."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def initialize(init: str, shape, rng: np.random.Generator) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    if init == "zeros":
        return np.zeros(shape)
    if init == "ones":
        return np.ones(shape)
    if init == "normal":
        return rng.normal(0.0, 1.0, shape)
    if init == "uniform":
        return rng.uniform(-1.0, 1.0, shape)
    if init in ("xavier_normal", "glorot_normal", "xavier", "glorot"):
        return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)
    if init in ("xavier_uniform", "glorot_uniform"):
        a = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape)
    if init in ("he_normal", "he", "kaiming_normal"):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if init in ("he_uniform", "kaiming_uniform"):
        a = np.sqrt(6.0 / fan_in)
        return rng.uniform(-a, a, shape)
    raise ValueError(f"unknown initializer {init!r}; choose from zeros, ones, normal, uniform, "
                     "xavier_normal, xavier_uniform, he_normal, he_uniform")


INITIALIZERS = ("zeros", "ones", "normal", "uniform", "xavier_normal", "xavier_uniform",
                "glorot_normal", "glorot_uniform", "he_normal", "he_uniform")
