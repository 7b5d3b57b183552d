"""Parameter initializers (all take an explicit numpy Generator for reproducibility).

By name (aliases in brackets), with fan_in/fan_out from `fans`:

* ``xavier_normal`` [glorot_normal, xavier, glorot]: N(0, 2/(fan_in+fan_out))
* ``xavier_uniform`` [glorot_uniform]: U(-a, a), a = sqrt(6/(fan_in+fan_out))
* ``he_normal`` [kaiming_normal, he]: N(0, 2/fan_in)
* ``he_uniform`` [kaiming_uniform]: U(-a, a), a = sqrt(6/fan_in)
* ``lecun_normal``: N(0, 1/fan_in);  ``lecun_uniform``: U(-a, a), a = sqrt(3/fan_in)
* ``torch_default`` [torch, pytorch]: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's
  nn.Linear default (kaiming_uniform with a=sqrt(5)); `torch_default_bias` gives the
  matching bias, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the *weight's* fan_in.
* ``zeros``, ``ones``, ``normal`` (N(0, 1)), ``uniform`` (U(-1, 1)).

`gn.nn.Linear` and `gn.nn.MLP` default to ``torch_default`` for W and b (see
`DEFAULT_DENSE_INIT`): on the lectures' small tanh/sigmoid nets the non-zero
biases matter (two spirals: 100 % with it, ~70 % with Glorot weights and zero biases).
"""
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
    if init == "lecun_normal":
        return rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
    if init == "lecun_uniform":
        a = np.sqrt(3.0 / fan_in)
        return rng.uniform(-a, a, shape)
    if init in ("torch_default", "torch", "pytorch"):
        a = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-a, a, shape)
    raise ValueError(f"unknown initializer {init!r}; choose from {', '.join(INITIALIZERS)}")


def torch_default_bias(fan_in: int, shape, rng: np.random.Generator) -> np.ndarray:
    """PyTorch's nn.Linear bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in of the weight."""
    a = 1.0 / np.sqrt(max(1, int(fan_in)))
    return rng.uniform(-a, a, shape)


INITIALIZERS = ("zeros", "ones", "normal", "uniform", "xavier_normal", "xavier_uniform",
                "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "kaiming_normal",
                "kaiming_uniform", "lecun_normal", "lecun_uniform", "torch_default")

#: the default of gn.nn.Linear / gn.nn.MLP (weights and biases), as PyTorch's nn.Linear
DEFAULT_DENSE_INIT = "torch_default"
