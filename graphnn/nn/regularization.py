"""Weight-decay penalties added to the loss graph (lecture 004, "Weight decay").

    L2 (ridge):    lam / 2 * sum theta^2
    L1 (lasso):    lam * sum |theta|
    elastic net:   r * lam / 2 * sum |theta| + (1 - r) / 2 * lam * sum theta^2

The elastic-net line is the lecture's formula as written (its L1 part carries a
factor 1/2 that scikit-learn's does not). A penalty is a scalar graph node; its
gradient (lam * theta for L2, lam * sign(theta) for L1) comes from reverse mode
like any other. `L2(lam)` with SGD equals torch's ``weight_decay=lam``.

    penalty = gn.nn.L2(1e-4)(params)         # a scalar node
    tr = gn.Trainer(loss, optimizer=gn.optim.Adam(lr=1e-2), regularization=gn.nn.L2(1e-4))

By default every trainable param is penalised (the lecture's sum over all
theta); pass `params=` (nodes or names) or `exclude=` to choose.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from ..errors import GraphError
from ..graph import Node
from ..ops import api

__all__ = ["Regularizer", "L1", "L2", "ElasticNet"]


def _coef(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


class Regularizer:
    """A penalty on parameters; call it on the list of trainable params to get a scalar node."""

    def __init__(self, params: Iterable | None = None, exclude: Iterable = ()):
        self.only = None if params is None else {p.name if isinstance(p, Node) else str(p)
                                                 for p in params}
        self.exclude = {p.name if isinstance(p, Node) else str(p) for p in exclude}

    def select(self, params: Sequence[Node]) -> list[Node]:
        chosen = [p for p in params if (self.only is None or p.name in self.only)
                  and p.name not in self.exclude]
        if self.only is not None:
            missing = self.only - {p.name for p in params}
            if missing:
                raise GraphError(f"{type(self).__name__}: {sorted(missing)} are not trainable "
                                 f"params of this loss (have {[p.name for p in params]})")
        return chosen

    def __call__(self, params: Sequence[Node]) -> Node | None:
        """The penalty node (role forward, scope ``regularization``), or None if no param is chosen."""
        chosen = self.select(list(params))
        if not chosen:
            return None
        g = chosen[0].graph
        with g.provenance(scope="regularization"):
            total = None
            for p in chosen:
                term = self.term(p)
                total = term if total is None else total + term
            return total

    def term(self, p: Node) -> Node:
        raise NotImplementedError

    def config(self) -> dict:
        return {"type": type(self).__name__, **self._hyper()}

    def _hyper(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._hyper().items())})"


def _sum_sq(p: Node) -> Node:
    return api.sum(p * p)


def _sum_abs(p: Node) -> Node:
    return api.sum(api.abs(p))


class _OneCoefficient(Regularizer):
    def __init__(self, lam: float, params=None, exclude=()):
        super().__init__(params, exclude)
        self.lam = _coef(lam, "lam")

    def _hyper(self):
        return {"lam": self.lam}


class L2(_OneCoefficient):
    """Ridge: lam / 2 * sum theta^2 (gradient lam * theta)."""

    def term(self, p):
        return (self.lam / 2) * _sum_sq(p)


class L1(_OneCoefficient):
    """Lasso: lam * sum |theta| (gradient lam * sign(theta); drives weights to exactly 0)."""

    def term(self, p):
        return self.lam * _sum_abs(p)


class ElasticNet(Regularizer):
    """Lecture 004: r * lam / 2 * sum |theta| + (1 - r) / 2 * lam * sum theta^2, r in [0, 1]."""

    def __init__(self, lam: float, r: float = 0.5, params=None, exclude=()):
        super().__init__(params, exclude)
        self.lam = _coef(lam, "lam")
        self.r = _coef(r, "r")
        if self.r > 1:
            raise ValueError(f"r must lie in [0, 1], got {r!r}")

    def _hyper(self):
        return {"lam": self.lam, "r": self.r}

    def term(self, p):
        return (self.r * self.lam / 2) * _sum_abs(p) + ((1 - self.r) / 2 * self.lam) * _sum_sq(p)
