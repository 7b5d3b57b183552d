"""Optimizers as graph update rules (lecture 004), equal to `torch.optim` step for step.

An optimizer does not run anything. Given the trainable params and their
gradient nodes (from reverse mode), `Optimizer.build` adds to the graph the
nodes computing each param's new value and the new optimizer state, and
returns the `{param: new_value}` map that `gn.compile(..., updates=...)`
writes back in place. So a whole training step (forward, backward, update) is
one graph, drawn and compiled like any other.

    g = loss.graph
    params = [W1, b1, W2, b2]
    opt = gn.optim.Adam(lr=1e-2)
    updates = opt.build(params, gn.grad(loss, params))
    step = gn.compile([loss], updates=updates)
    for _ in range(100):
        step(x=X, y=Y)                 # params and state change in g.values
    opt.set_lr(1e-3)                   # fed value: no recompilation

Optimizer state
---------------
State (momentum buffers, moment estimates, the step counter used by Adam's
bias correction, and the learning rate itself) lives in the graph as
`param` nodes named under the optimizer's prefix, ``optim/`` (``optim_2/``,
... for further optimizers on the same graph): ``optim/lr``, ``optim/step``,
``optim/<param>/<slot>``. Each optimizer keeps a registry of them
(`opt.state`, by name) and `is_state(node)` recognises them, so the Trainer
never treats them as trainable. Update nodes carry role ``update`` and scope
``optim/<param>`` (``optim`` for the shared scalars).

Lecture 004 versus torch (graphnn follows torch)
-------------------------------------------------
* Momentum: the lecture writes ``v = eta v - alpha g; beta += v``; torch
  keeps ``buf = mu buf + (1 - dampening) g`` (the first step sets ``buf = g``)
  and steps ``p -= lr buf``. Both agree while the learning rate is constant;
  with a schedule torch's velocity is rescaled by the current learning rate.
* AdaGrad: the lecture accumulates the gradient *norm* ``r += ||g||_2`` and
  divides by ``sqrt(r)``; torch accumulates the element-wise square
  ``s += g*g``, divides by ``sqrt(s) + eps`` (epsilon outside the square root)
  and decays the rate as ``lr / (1 + (t - 1) lr_decay)``.
* RMSProp: the lecture's ``r = rho r + (1 - rho) ||g||_2`` becomes the
  element-wise ``s = alpha s + (1 - alpha) g*g`` (torch's ``alpha`` is the
  lecture's ``rho``, default 0.99), divided by ``sqrt(s) + eps``; torch adds
  optional momentum and a centered variant.
* Adam: the lecture only says "RMSProp with momentum"; torch (Kingma & Ba)
  corrects both moments for their zero start, ``m / (1 - b1^t)`` and
  ``v / (1 - b2^t)``, and adds epsilon *after* the square root of the
  corrected second moment. AdamW decays weights directly
  (``p *= 1 - lr wd``) instead of adding ``wd p`` to the gradient.
* ``weight_decay`` adds ``wd * p`` to the gradient, the gradient of the
  lecture's L2 penalty ``wd/2 sum p^2`` (see `graphnn.nn.regularization`).

Each update also mirrors torch's order of floating-point operations (``lerp``,
``addcmul``, ``addcdiv``), so results agree to rounding.
"""
from __future__ import annotations

import math
import re
import weakref
from typing import Sequence

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Graph, Node
from ..ops import api

__all__ = ["Optimizer", "SGD", "Momentum", "AdaGrad", "Adagrad", "RMSProp", "RMSprop",
           "Adam", "AdamW", "is_state", "OPTIMIZERS"]

_PREFIX = re.compile(r"^optim(_\d+)?/")
_STATE: "weakref.WeakKeyDictionary[Graph, set[str]]" = weakref.WeakKeyDictionary()


def is_state(node: Node) -> bool:
    """True for optimizer state params (registered by an optimizer, or named ``optim*/...``
    as they are in a graph loaded from a file)."""
    if node.op != "param":
        return False
    return node.name in _STATE.get(node.graph, ()) or bool(_PREFIX.match(node.name))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _num(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _lerp(a: Node, b: Node, w: float) -> Node:
    """torch's lerp(a, b, w), same rounding: a + w (b - a) for |w| < 0.5, else b - (b - a)(1 - w)."""
    if abs(w) < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (1 - w)


class Optimizer:
    """Base class. Subclasses define `hyper` (their settings) and `rule` (one param's update).

    `lr` is a float, or a `graphnn.nn.schedules.Schedule` (its base learning rate
    is the float given as `lr`, or the schedule's own for `CyclicLR`)."""

    needs_step = False  # does the rule use the step counter t?

    def __init__(self, lr: float, schedule=None):
        self.base_lr = _num(lr, "lr")
        _check(self.base_lr >= 0, f"lr must be >= 0, got {lr}")
        self.schedule = schedule
        self.graph: Graph | None = None
        self.prefix: str | None = None
        self.lr: Node | None = None
        self.step: Node | None = None
        self.state: dict[str, Node] = {}
        self.slots: dict[str, dict[str, Node]] = {}
        self.updates: dict[Node, Node] = {}
        if schedule is not None:
            from .schedules import Schedule
            if not isinstance(schedule, Schedule):
                raise TypeError(f"schedule must be a graphnn.nn.schedules.Schedule, got {schedule!r}")
            initial = schedule(0, self.base_lr)
            self.initial_lr = float(initial)
        else:
            self.initial_lr = self.base_lr

    # -- description ---------------------------------------------------------------------
    def hyper(self) -> dict:
        """The settings, JSON-able (saved in checkpoints)."""
        return {"lr": self.base_lr}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({args})"

    # -- building -------------------------------------------------------------------------
    def build(self, params: Sequence[Node], grads: Sequence[Node]) -> dict[Node, Node]:
        """Add the update nodes for `params` given their gradient nodes; return `{node: new_value}`
        for every param *and* every state node (pass it to `gn.compile(updates=...)`)."""
        params, grads = list(params), list(grads)
        if self.graph is not None:
            raise GraphError(f"{type(self).__name__} was already built into graph "
                             f"{self.graph.name!r}; create one optimizer per training step")
        if not params:
            raise GraphError("optimizer: no parameters to update")
        if len(params) != len(grads):
            raise GraphError(f"optimizer: {len(params)} params but {len(grads)} gradients")
        g = params[0].graph
        seen = set()
        for p, d in zip(params, grads):
            if not isinstance(p, Node) or p.op != "param":
                raise GraphError(f"optimizer: {getattr(p, 'name', p)!r} is not a param node")
            if not isinstance(d, Node) or d.graph is not g or p.graph is not g:
                raise GraphError(f"optimizer: param {p.name!r} and its gradient must be nodes "
                                 f"of graph {g.name!r}")
            if d.shape != p.shape:
                raise ShapeError(f"optimizer: gradient {d.name!r} of {p.name!r} has shape "
                                 f"{d.shape}, the param {p.shape}")
            if is_state(p):
                raise GraphError(f"optimizer: {p.name!r} is optimizer state, not trainable")
            if p.name in seen:
                raise GraphError(f"optimizer: param {p.name!r} given twice")
            seen.add(p.name)
        self.graph = g
        k = 1
        while any(n.startswith(self._prefix_for(k) + "/") for n in g.values):
            k += 1
        self.prefix = self._prefix_for(k)
        registry = _STATE.setdefault(g, set())
        updates: dict[Node, Node] = {}
        with g.provenance(scope=self.prefix, role="update"):
            self.lr = self._state_param("lr", np.array(self.initial_lr, dtype=g.dtype))
            registry.add(self.lr.name)
            t_new = None
            if self.needs_step:
                self.step = self._state_param("step", np.array(0.0, dtype=g.dtype))
                registry.add(self.step.name)
                t_new = self.step + 1.0
                updates[self.step] = t_new
        for p, d in zip(params, grads):
            with g.provenance(scope=f"{self.prefix}/{p.name}", role="update"):
                self.slots[p.name] = {}
                lr = api.cast(self.lr, p.dtype)
                t = None if t_new is None else api.cast(t_new, p.dtype)
                if d.dtype != p.dtype:
                    d = api.cast(d, p.dtype)
                new_p, new_state = self.rule(p, d, lr, t)
                if new_p.dtype != p.dtype:
                    new_p = api.cast(new_p, p.dtype)
                updates[p] = new_p
                for slot, value in new_state.items():
                    node = self.slots[p.name][slot]
                    updates[node] = api.cast(value, node.dtype)
        for slots in self.slots.values():
            registry.update(n.name for n in slots.values())
        self.updates = updates
        return updates

    def _prefix_for(self, k: int) -> str:
        return "optim" if k == 1 else f"optim_{k}"

    def _state_param(self, name: str, value: np.ndarray) -> Node:
        node = self.graph.param(f"{self.prefix}/{name}", value=value)
        self.state[node.name] = node
        return node

    def slot(self, p: Node, name: str, init: float = 0.0) -> Node:
        """A state array shaped like `p` (e.g. a momentum buffer), named ``optim/<p>/<name>``."""
        node = self.graph.param(f"{self.prefix}/{p.name}/{name}",
                                value=np.full(p.shape, init, dtype=p.dtype))
        self.state[node.name] = node
        self.slots[p.name][name] = node
        return node

    def shared(self):
        """Scope for the scalars all params share (bias corrections, decayed rates)."""
        return self.graph.provenance(scope=self.prefix)

    def rule(self, p: Node, g: Node, lr: Node, t: Node | None) -> tuple[Node, dict[str, Node]]:
        """One param's new value and its new slot values (by slot name)."""
        raise NotImplementedError

    # -- running ------------------------------------------------------------------------------
    def _bound(self) -> Graph:
        if self.graph is None:
            raise GraphError(f"{type(self).__name__} is not built yet (Trainer or build() does it)")
        return self.graph

    def set_lr(self, value: float) -> None:
        """Set the learning rate fed to the compiled step (in place: no recompilation)."""
        g = self._bound()
        g.values[self.lr.name][...] = _num(value, "lr")

    def get_lr(self) -> float:
        return float(self._bound().values[self.lr.name])

    def lr_at(self, epoch: int, step: int) -> float:
        """The learning rate the schedule gives at this epoch / global step (or the fixed lr)."""
        if self.schedule is None:
            return self.base_lr
        t = step if self.schedule.interval == "step" else epoch
        return float(self.schedule(t, self.base_lr))

    def state_values(self) -> dict[str, np.ndarray]:
        g = self._bound()
        return {name: g.values[name] for name in self.state}


def _wd(p: Node, g: Node, wd: float) -> Node:
    """torch's grad.add(param, alpha=wd)."""
    return g + wd * p if wd else g


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum (heavy-ball or Nesterov) and
    weight decay; torch.optim.SGD's update::

        g = grad + weight_decay * p
        buf = momentum * buf + (1 - dampening) * g        (buf = g on the first step)
        g = g + momentum * buf  if nesterov  else  buf
        p = p - lr * g

    Lecture 004 writes momentum as ``v = eta v - alpha g; p += v``: the same while lr
    is constant (v = -lr buf), but torch's buffer does not carry old learning rates.
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, schedule=None):
        super().__init__(lr, schedule)
        self.momentum = _num(momentum, "momentum")
        self.dampening = _num(dampening, "dampening")
        self.nesterov = bool(nesterov)
        self.weight_decay = _num(weight_decay, "weight_decay")
        _check(self.momentum >= 0, f"momentum must be >= 0, got {momentum}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
        _check(not self.nesterov or (self.momentum > 0 and self.dampening == 0),
               "Nesterov momentum requires momentum > 0 and dampening = 0")
        self.needs_step = bool(self.momentum and self.dampening)

    def hyper(self):
        return {"lr": self.base_lr, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def rule(self, p, g, lr, t):
        g = _wd(p, g, self.weight_decay)
        state = {}
        if self.momentum:
            buf = self.slot(p, "momentum_buffer")
            if self.dampening:
                # the first step copies g undamped (torch); later steps damp it
                with self.shared():
                    c = api.where(api.gt(t, 1.0), api.lift(1 - self.dampening, t), api.lift(1.0, t))
                buf_new = buf * self.momentum + c * g
            else:
                buf_new = buf * self.momentum + g  # buf starts at 0: first step gives g
            state["momentum_buffer"] = buf_new
            g = g + self.momentum * buf_new if self.nesterov else buf_new
        return p - lr * g, state


def Momentum(lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False,
             weight_decay: float = 0.0, schedule=None) -> SGD:
    """SGD with momentum (lecture 004's name for it)."""
    return SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
               schedule=schedule)


class AdaGrad(Optimizer):
    """AdaGrad, torch.optim.Adagrad's update::

        g = grad + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (sqrt(s) + eps)

    Lecture 004 accumulates the gradient norm (``r += ||g||_2``) and divides by
    ``sqrt(r)`` with no epsilon; torch accumulates element-wise squares and adds eps
    outside the square root.
    """

    def __init__(self, lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, schedule=None):
        super().__init__(lr, schedule)
        self.lr_decay = _num(lr_decay, "lr_decay")
        self.weight_decay = _num(weight_decay, "weight_decay")
        self.initial_accumulator_value = _num(initial_accumulator_value, "initial_accumulator_value")
        self.eps = _num(eps, "eps")
        _check(self.lr_decay >= 0, f"lr_decay must be >= 0, got {lr_decay}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
        _check(self.initial_accumulator_value >= 0, "initial_accumulator_value must be >= 0")
        _check(self.eps >= 0, f"eps must be >= 0, got {eps}")
        self.needs_step = bool(self.lr_decay)

    def hyper(self):
        return {"lr": self.base_lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}

    def rule(self, p, g, lr, t):
        g = _wd(p, g, self.weight_decay)
        with self.shared():
            clr = lr / (1.0 + (t - 1.0) * self.lr_decay) if self.lr_decay else lr
        s = self.slot(p, "sum", self.initial_accumulator_value)
        s_new = s + g * g
        std = api.sqrt(s_new) + self.eps
        return p - (clr * g) / std, {"sum": s_new}


Adagrad = AdaGrad


class RMSProp(Optimizer):
    """RMSProp, torch.optim.RMSprop's update::

        g = grad + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        avg = sqrt(s - ga * ga) + eps   with ga = lerp(ga, g, 1 - alpha)   if centered
        avg = sqrt(s) + eps                                                otherwise
        buf = momentum * buf + g / avg;  p = p - lr * buf                  if momentum
        p = p - lr * g / avg                                               otherwise

    Lecture 004's ``r = rho r + (1 - rho) ||g||_2`` uses the gradient norm and no
    epsilon; torch's ``alpha`` is the lecture's ``rho``.
    """

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 schedule=None):
        super().__init__(lr, schedule)
        self.alpha = _num(alpha, "alpha")
        self.eps = _num(eps, "eps")
        self.weight_decay = _num(weight_decay, "weight_decay")
        self.momentum = _num(momentum, "momentum")
        self.centered = bool(centered)
        _check(0 <= self.alpha, f"alpha must be >= 0, got {alpha}")
        _check(self.eps >= 0, f"eps must be >= 0, got {eps}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
        _check(self.momentum >= 0, f"momentum must be >= 0, got {momentum}")

    def hyper(self):
        return {"lr": self.base_lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered}

    def rule(self, p, g, lr, t):
        g = _wd(p, g, self.weight_decay)
        sq = self.slot(p, "square_avg")
        sq_new = sq * self.alpha + ((1 - self.alpha) * g) * g
        state = {"square_avg": sq_new}
        if self.centered:
            ga = self.slot(p, "grad_avg")
            ga_new = _lerp(ga, g, 1 - self.alpha)
            state["grad_avg"] = ga_new
            avg = api.sqrt(sq_new - ga_new * ga_new)
        else:
            avg = api.sqrt(sq_new)
        avg = avg + self.eps
        if self.momentum > 0:
            buf = self.slot(p, "momentum_buffer")
            buf_new = buf * self.momentum + g / avg
            state["momentum_buffer"] = buf_new
            return p - lr * buf_new, state
        return p - (lr * g) / avg, state


RMSprop = RMSProp


class Adam(Optimizer):
    """Adam, torch.optim.Adam's update (t counts steps from 1)::

        g = grad + weight_decay * p
        m = lerp(m, g, 1 - b1);   v = b2 * v + (1 - b2) * g * g
        vmax = max(vmax, v)                         (amsgrad; then use vmax for v)
        p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Lecture 004 describes Adam as RMSProp with momentum; the bias corrections
    ``1 - b^t`` and the epsilon added after the square root are torch's (and the paper's).
    """

    needs_step = True
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 schedule=None):
        super().__init__(lr, schedule)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_num(betas[0], "beta1"), _num(betas[1], "beta2"))
        self.eps = _num(eps, "eps")
        self.weight_decay = _num(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)
        for b in self.betas:
            _check(0 <= b < 1, f"betas must lie in [0, 1), got {betas}")
        _check(self.eps >= 0, f"eps must be >= 0, got {eps}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")

    def hyper(self):
        return {"lr": self.base_lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "amsgrad": self.amsgrad}

    def rule(self, p, g, lr, t):
        b1, b2 = self.betas
        if self.decoupled:
            if self.weight_decay:
                with self.shared():
                    keep = 1.0 - lr * self.weight_decay
                p_dec = p * keep
            else:
                p_dec = p
        else:
            g = _wd(p, g, self.weight_decay)
            p_dec = p
        m, v = self.slot(p, "exp_avg"), self.slot(p, "exp_avg_sq")
        m_new = _lerp(m, g, 1 - b1)
        v_new = v * b2 + ((1 - b2) * g) * g
        state = {"exp_avg": m_new, "exp_avg_sq": v_new}
        with self.shared():
            bc1 = 1.0 - api.pow(api.lift(b1, t), t)
            bc2 = 1.0 - api.pow(api.lift(b2, t), t)
            step_size = lr / bc1
            bc2_sqrt = api.sqrt(bc2)
        second = v_new
        if self.amsgrad:
            vmax = self.slot(p, "max_exp_avg_sq")
            second = api.maximum(vmax, v_new)
            state["max_exp_avg_sq"] = second
        denom = api.sqrt(second) / bc2_sqrt + self.eps
        return p_dec - (step_size * m_new) / denom, state


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW, default weight_decay 0.01):
    ``p = p * (1 - lr * weight_decay)`` before the Adam step, instead of adding
    ``weight_decay * p`` to the gradient."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 schedule=None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, schedule)


OPTIMIZERS = {"SGD": SGD, "AdaGrad": AdaGrad, "RMSProp": RMSProp, "Adam": Adam, "AdamW": AdamW}
