"""Learning-rate schedules (lecture 004: "a programmed update of the learning rate
(cyclic, cosine, etc.)"), with the formulas of torch.optim.lr_scheduler.

A schedule is a pure function of a counter: `schedule(t, base_lr) -> lr`. The
counter is the epoch (`interval = "epoch"`: StepLR, CosineAnnealingLR) or the
global optimizer step (`interval = "step"`: CyclicLR), as torch steps them.
The learning rate is an optimizer state param (``optim/lr``) fed to the
compiled training step, so changing it never recompiles:

    opt = gn.optim.SGD(lr=0.1, momentum=0.9, schedule=gn.nn.schedules.StepLR(10, 0.5))

The Trainer sets ``optim/lr`` before each epoch (or step) with `opt.lr_at`.
"""
from __future__ import annotations

import math

__all__ = ["Schedule", "StepLR", "CosineAnnealingLR", "CyclicLR", "Step", "Cosine", "Cyclic"]


def _pos_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def _finite(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


class Schedule:
    """Base class: `__call__(t, base_lr)`; `interval` says what t counts."""

    interval = "epoch"

    def __call__(self, t: int, base_lr: float) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        return {"type": type(self).__name__, **{k: v for k, v in vars(self).items()}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class StepLR(Schedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _pos_int(step_size, "step_size")
        self.gamma = _finite(gamma, "gamma")

    def __call__(self, t, base_lr):
        return base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(Schedule):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2 (periodic past T_max,
    as torch's recursive form)."""

    def __init__(self, T_max: int, eta_min: float = 0.0):
        self.T_max = _pos_int(T_max, "T_max")
        self.eta_min = _finite(eta_min, "eta_min")

    def __call__(self, t, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class CyclicLR(Schedule):
    """Cyclical learning rate (Smith 2017), stepped every optimizer step; torch's formula.

    mode "triangular" (constant amplitude), "triangular2" (halved each cycle) or
    "exp_range" (scaled by gamma ** step). The learning rate moves from base_lr to
    max_lr in `step_size_up` steps and back in `step_size_down` (default: the same)."""

    interval = "step"

    def __init__(self, base_lr: float, max_lr: float, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular", gamma: float = 1.0):
        self.base_lr = _finite(base_lr, "base_lr")
        self.max_lr = _finite(max_lr, "max_lr")
        self.step_size_up = _pos_int(step_size_up, "step_size_up")
        self.step_size_down = self.step_size_up if step_size_down is None else \
            _pos_int(step_size_down, "step_size_down")
        if mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"mode must be triangular, triangular2 or exp_range, got {mode!r}")
        self.mode = mode
        self.gamma = _finite(gamma, "gamma")

    def __call__(self, t, base_lr=None):
        total = float(self.step_size_up) + float(self.step_size_down)
        ratio = float(self.step_size_up) / total
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (self.max_lr - self.base_lr) * scale
        if self.mode == "triangular":
            f = 1.0
        elif self.mode == "triangular2":
            f = 1 / (2.0 ** (cycle - 1))
        else:
            f = self.gamma ** t
        return self.base_lr + height * f


Step, Cosine, Cyclic = StepLR, CosineAnnealingLR, CyclicLR
