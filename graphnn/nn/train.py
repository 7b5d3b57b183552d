"""Training: one compiled program per step, driven by the epoch loop of lecture 000.

`Trainer(loss, optimizer, backend, regularization)` builds the whole training
step as one graph -- forward, the penalty, reverse-mode gradients, the
optimizer's update nodes -- and compiles it once with
`gn.compile([objective], updates=...)`, so each step is one call of
straight-line generated code that writes parameters and optimizer state in
place into `g.values`. The step is drawable like any graph
(`trainer.step_outputs`, nodes tagged ``update``).

`fit` follows lecture 000: each epoch shuffles the data (seeded), cuts it into
consecutive mini-batches of `batch_size` (the last one may be smaller, unless
`drop_last`), and takes one optimizer step per mini-batch.

Conventions
-----------
* Data is a dict `name -> array`, the sample axis first; every input node the
  loss uses must be declared with a batch dimension first, ``(None, ...)``.
* `fit(epochs=E)` trains until E epochs have been completed *in total*
  (counting earlier `fit` calls and a loaded checkpoint), like
  PyTorch-Lightning's ``max_epochs``. The shuffle generator is seeded from
  `seed` when training starts at epoch 0 and otherwise continues its stream,
  so "fit 3 epochs, save, load, fit to 6" gives bit for bit the parameters of
  "fit to 6".
* Losses in the history include the regularization penalty (the objective
  minimised), on training and validation data alike.
* Epochs are numbered from 1 in the history and in messages.
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import feeds as _feeds
from ..errors import DataError, FormatError, GraphError, GraphnnError, ShapeError
from ..graph import Node, fmt_shape
from ..ops import api
from .losses import one_hot_targets
from . import optim as _optim
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION  # noqa: F401  (checkpoint.py)

__all__ = ["Trainer", "EarlyStopping", "History", "DataError", "DivergedError",
           "accuracy", "binary_accuracy"]


class DivergedError(GraphnnError, FloatingPointError):
    """The loss became NaN or infinite; the parameters were reset to the last good ones."""

    def __init__(self, msg: str, epoch: int, step: int, global_step: int):
        super().__init__(msg)
        self.epoch, self.step, self.global_step = epoch, step, global_step


# -- metrics built as graph nodes ------------------------------------------------------------

def binary_accuracy(output: Node, target: Node, threshold: float = 0.5) -> Node:
    """Fraction of samples with (output > threshold) == target (targets 0/1).
    Use threshold=0 for logits."""
    if output.shape != target.shape:
        raise ShapeError(f"binary_accuracy: output {output.name!r} {output.shape} and target "
                         f"{target.name!r} {target.shape} differ")
    pred = api.gt(output, threshold)
    return api.mean(api.eq(pred, api.cast(target, pred.dtype)))


def accuracy(logits: Node, labels: Node) -> Node:
    """Fraction of samples whose label has the largest logit; labels are integers (N,)
    or one-hot (N, K). A tie with the maximum counts as correct."""
    labels = one_hot_targets(logits, labels, "accuracy")
    picked = api.sum(api.cast(labels, logits.dtype) * logits, axis=-1)
    return api.mean(api.eq(picked, api.max(logits, axis=-1)))


# -- history and early stopping ----------------------------------------------------------------

@dataclass
class History:
    """Per-epoch records; index i is epoch `epochs[i]` (numbered from 1)."""

    epochs: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    val_metrics: dict[str, list[float]] = field(default_factory=dict)
    lr: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_epoch: int | None = None

    def series(self, name: str) -> list[float]:
        """`loss`, `val_loss`, a metric name, or `val_<metric>`."""
        if name in ("loss", "val_loss"):
            return getattr(self, name)
        if name.startswith("val_") and name[4:] in self.val_metrics:
            return self.val_metrics[name[4:]]
        if name in self.metrics:
            return self.metrics[name]
        raise KeyError(f"history has no series {name!r}; have loss, val_loss, "
                       f"{sorted(self.metrics)} and val_ versions")

    def to_dict(self) -> dict:
        return {"epochs": list(self.epochs), "loss": list(self.loss),
                "val_loss": list(self.val_loss), "metrics": dict(self.metrics),
                "val_metrics": dict(self.val_metrics), "lr": list(self.lr),
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        try:
            h = cls(epochs=[int(e) for e in d["epochs"]],
                    loss=[float(v) for v in d["loss"]],
                    val_loss=[float(v) for v in d["val_loss"]],
                    metrics={str(k): [float(x) for x in v] for k, v in d["metrics"].items()},
                    val_metrics={str(k): [float(x) for x in v] for k, v in d["val_metrics"].items()},
                    lr=[float(v) for v in d["lr"]],
                    best_epoch=None if d["best_epoch"] is None else int(d["best_epoch"]),
                    stopped_epoch=None if d["stopped_epoch"] is None else int(d["stopped_epoch"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"checkpoint history is malformed: {e}") from None
        return h

    def __len__(self) -> int:
        return len(self.epochs)


class EarlyStopping:
    """Stop when the monitored value has not improved by more than `min_delta` for
    `patience` epochs (lecture 004: validation error is noisy, so wait a little).

    monitor: "val_loss" (default; "loss" is used when there is no validation data),
    "loss", or a metric name (prefix "val_" for its validation value); mode "min" or
    "max" (accuracy). restore_best: when training stops early, parameters go back to
    those of the best epoch."""

    def __init__(self, patience: int = 10, min_delta: float = 0.0, restore_best: bool = True,
                 monitor: str = "val_loss", mode: str = "min"):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) \
                or not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta = patience, float(min_delta)
        self.restore_best, self.monitor, self.mode = bool(restore_best), str(monitor), mode
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_params: dict[str, np.ndarray] = {}
        self.stopped_epoch: int | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, epoch: int, value: float, params: Mapping[str, np.ndarray]) -> bool:
        """Record one epoch's value; True when training should stop."""
        if self.improved(value):
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            if self.restore_best:
                self.best_params = {k: np.array(v, copy=True) for k, v in params.items()}
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def state_dict(self) -> dict:
        return {"patience": self.patience, "min_delta": self.min_delta,
                "restore_best": self.restore_best, "monitor": self.monitor, "mode": self.mode,
                "best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch}

    def load_state(self, d: dict, best_params: dict[str, np.ndarray]) -> None:
        try:
            self.best = None if d["best"] is None else float(d["best"])
            self.best_epoch = None if d["best_epoch"] is None else int(d["best_epoch"])
            self.wait = int(d["wait"])
            self.stopped_epoch = None if d["stopped_epoch"] is None else int(d["stopped_epoch"])
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"checkpoint early-stopping state is malformed: {e}") from None
        self.best_params = {k: np.array(v, copy=True) for k, v in best_params.items()}

    def __repr__(self) -> str:
        return (f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
                f"restore_best={self.restore_best}, monitor={self.monitor!r}, mode={self.mode!r})")


# -- the trainer --------------------------------------------------------------------------------

def _pos_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


class Trainer:
    """Compile and run the training step of `loss` (a scalar node).

    optimizer: a `gn.optim` optimizer (default `SGD(lr=0.01)`); it is built into the
    graph here. regularization: a `gn.nn.L1/L2/ElasticNet` penalty added to the loss.
    params: the trainable params (default: every param the loss depends on, except
    optimizer state)."""

    def __init__(self, loss: Node, optimizer: "_optim.Optimizer | None" = None,
                 backend: str = "numpy", regularization=None,
                 params: Sequence[Node] | None = None):
        from ..autodiff import reverse
        from ..compile import compile as gn_compile
        if not isinstance(loss, Node):
            raise GraphError(f"Trainer: loss must be a graph node, got {type(loss).__name__}")
        if loss.shape != ():
            raise ShapeError(f"Trainer: loss {loss.name!r} ({loss.op}) has shape {loss.shape}; "
                             "it must be a scalar (reduce it with .mean())")
        if backend not in ("numpy", "cupy"):
            raise GraphError(f"Trainer: backend {backend!r} is not supported for training yet; "
                             "use backend='numpy' or 'cupy'")
        if optimizer is None:
            optimizer = _optim.SGD(lr=0.01)
        if not isinstance(optimizer, _optim.Optimizer):
            raise GraphError(f"Trainer: optimizer must be a gn.optim optimizer, got {optimizer!r}")
        self.graph = g = loss.graph
        self.loss = loss
        self.backend = backend
        self.optimizer = optimizer
        self.regularization = regularization
        self._compile = gn_compile
        if params is None:
            params = [n for n in g.ancestors([loss]) if n.op == "param" and not _optim.is_state(n)]
        else:
            params = list(params)
            for p in params:
                if not isinstance(p, Node) or p.op != "param" or p.graph is not g:
                    raise GraphError(f"Trainer: {getattr(p, 'name', p)!r} is not a param of "
                                     f"graph {g.name!r}")
        if not params:
            raise GraphError(f"Trainer: loss {loss.name!r} depends on no trainable param")
        self.params: list[Node] = params
        first = len(g.nodes)   # what the Trainer builds is not the user's model (gn.save)
        self.penalty = regularization(params) if regularization is not None else None
        if self.penalty is not None:
            with g.provenance(scope="regularization"):
                self.objective = loss + self.penalty
        else:
            self.objective = loss
        self.grads = reverse.grad(self.objective, params)
        self.updates = optimizer.build(params, self.grads)
        from ..transient import mark_derived
        mark_derived(g, g.nodes[first:])
        self.step_program = self._compile([self.objective], backend=backend, updates=self.updates)
        self._programs: dict[tuple, Any] = {}
        self.epoch = 0
        self.global_step = 0
        self.seed: int | None = None
        self._rng: np.random.Generator | None = None
        self.history = History()
        self.early_stopping: EarlyStopping | None = None
        self._es_pending: tuple[dict, dict] | None = None
        #: per-layer gradient norms at each epoch's end (fit(record_gradients=True))
        self.gradient_norms: dict[str, list[float]] = {}
        self.gradient_epochs: list[int] = []

    # -- introspection -------------------------------------------------------------------------
    @property
    def step_outputs(self) -> list[Node]:
        """The nodes of one training step: the objective and every update (draw these)."""
        return [self.objective, *self.updates.values()]

    @property
    def state(self) -> list[Node]:
        """Optimizer state params (excluded from training)."""
        return list(self.optimizer.state.values())

    def _tracked(self) -> list[str]:
        """Names of every array a step changes (params and optimizer state)."""
        return [p.name for p in self.params] + list(self.optimizer.state)

    # -- data ----------------------------------------------------------------------------------
    def _needed_inputs(self, nodes: Sequence[Node]) -> list[Node]:
        return [n for n in self.graph.ancestors(nodes) if n.op == "input"]

    def _prepare(self, data, needed: Sequence[Node], what: str) -> tuple[dict[str, np.ndarray], int]:
        """Check and convert data: a clear error before any step runs."""
        if not isinstance(data, Mapping):
            raise DataError(f"{what} must be a dict name -> array, got {type(data).__name__}")
        if len(data) == 0:
            raise DataError(f"{what} is empty: give one array per input "
                            f"({sorted(n.name for n in needed)})")
        graph_inputs = {n.name for n in self.graph.inputs}
        unknown = sorted(str(k) for k in data if k not in graph_inputs)
        if unknown:
            raise DataError(f"{what}: unknown feed name(s) {unknown}; graph "
                            f"{self.graph.name!r} has inputs {sorted(graph_inputs)}")
        missing = sorted(n.name for n in needed if n.name not in data)
        if missing:
            raise DataError(f"{what}: missing input(s) {missing} needed by the loss")
        out, n_rows, first = {}, None, None
        labels = _feeds.label_depths(self.graph.nodes)  # inputs a one_hot reads (classes)
        for node in needed:
            raw = data[node.name]
            try:
                a = np.asarray(raw)
            except Exception as e:  # ragged lists and the like
                raise DataError(f"{what}: input {node.name!r} is not an array: {e}") from None
            if a.dtype.kind not in "biuf":
                raise DataError(f"{what}: input {node.name!r} has dtype {a.dtype}; "
                                "numbers are needed")
            # the check compiled programs make too: integral labels, no truncation
            a = _feeds.convert(node, a, f"{what}: input")
            if node.name in labels:
                _feeds.check_labels(node.name, a, labels[node.name], f"{what}: input")
            if not node.shape or node.shape[0] is not None:
                raise ShapeError(f"{what}: input {node.name!r} is declared with shape "
                                 f"({fmt_shape(node.shape)}) without a batch dimension first; "
                                 "mini-batch training needs inputs declared as (None, ...)")
            if a.ndim != node.ndim or any(d is not None and d != s
                                          for d, s in zip(node.shape[1:], a.shape[1:])):
                per = node.shape[1:]
                raise ShapeError(f"{what}: input {node.name!r} expects arrays of shape "
                                 f"(n, {fmt_shape(per)}) -- {per[-1] if per else 'no'} feature(s) "
                                 f"per sample -- got shape {a.shape}")
            if n_rows is None:
                n_rows, first = a.shape[0], node.name
            elif a.shape[0] != n_rows:
                raise ShapeError(f"{what}: mismatched lengths: {first!r} has {n_rows} samples, "
                                 f"{node.name!r} has {a.shape[0]}")
            if a.dtype.kind == "f":
                bad = ~np.isfinite(a)
                if bad.any():
                    row = int(np.argwhere(bad)[0][0])
                    raise DataError(f"{what}: input {node.name!r} contains NaN or inf "
                                    f"(first in sample {row})")
            if node.dtype.kind == "f":
                a = np.ascontiguousarray(a, dtype=node.dtype)
            elif a.dtype.kind in "iub":
                a = np.ascontiguousarray(a, dtype=node.dtype)
            else:
                raise DataError(f"{what}: input {node.name!r} takes {node.dtype} values, "
                                f"got {a.dtype}; cast it explicitly")
            out[node.name] = a
        if n_rows == 0:
            raise DataError(f"{what} is empty: 0 samples")
        if n_rows is None:
            raise DataError(f"{what}: the loss takes no inputs to feed")
        return out, int(n_rows)

    # -- programs -------------------------------------------------------------------------------
    def _program(self, kind: str, nodes: tuple[Node, ...]):
        key = (kind, tuple(id(n) for n in nodes))
        prog = self._programs.get(key)
        if prog is None:
            if kind == "step":
                prog = self.step_program if not nodes[1:] else \
                    self._compile(list(nodes), backend=self.backend, updates=self.updates)
            else:
                prog = self._compile(list(nodes), backend=self.backend)
            self._programs[key] = (prog, nodes)
            return prog
        return prog[0]

    @staticmethod
    def _plan(prog) -> list[tuple[bool, str]]:
        """(fed from the batch?, name) per argument of the compiled function."""
        return [(n.op != "param", n.name) for n in prog.arg_nodes]

    def _args(self, plan, feeds) -> list:
        values = self.graph.values
        return [feeds[name] if is_feed else values[name] for is_feed, name in plan]

    def _split_metrics(self, metrics) -> tuple[dict[str, Node], dict[str, Callable]]:
        nodes, fns = {}, {}
        for name, m in (metrics or {}).items():
            if not isinstance(name, str) or not name or name in ("loss",) or name.startswith("val_"):
                raise ValueError(f"bad metric name {name!r} (non-empty, not 'loss', no 'val_' prefix)")
            if isinstance(m, Node):
                if m.graph is not self.graph or m.shape != ():
                    raise ShapeError(f"metric {name!r}: {m.name!r} must be a scalar node of "
                                     f"graph {self.graph.name!r}, has shape {m.shape}")
                nodes[name] = m
            elif callable(m):
                fns[name] = m
            else:
                raise ValueError(f"metric {name!r} must be a scalar Node or a callable "
                                 f"(trainer, data) -> float, got {m!r}")
        return nodes, fns

    def _evaluate(self, data: dict, n: int, metric_nodes: dict[str, Node],
                  chunk: int) -> tuple[float, dict[str, float]]:
        outs = (self.objective, *metric_nodes.values())
        prog = self._program("eval", outs)
        plan = self._plan(prog)
        totals = np.zeros(len(outs))
        for lo in range(0, n, chunk):
            batch = {k: v[lo:lo + chunk] for k, v in data.items()}
            res = prog.fn(*self._args(plan, batch))
            totals += np.array([float(r) for r in res]) * len(next(iter(batch.values())))
        totals /= n
        return float(totals[0]), dict(zip(metric_nodes, (float(t) for t in totals[1:])))

    def evaluate(self, data: Mapping[str, np.ndarray], metrics=None,
                 batch_size: int = 4096) -> dict[str, float]:
        """Loss (with penalty) and metrics over `data`, as a dict."""
        nodes, fns = self._split_metrics(metrics)
        arrays, n = self._prepare(data, self._needed_inputs([self.objective, *nodes.values()]),
                                  "evaluation data")
        loss, vals = self._evaluate(arrays, n, nodes, _pos_int(batch_size, "batch_size"))
        vals.update({k: float(f(self, arrays)) for k, f in fns.items()})
        return {"loss": loss, **vals}

    def predict(self, node: Node, feeds: Mapping[str, np.ndarray],
                batch_size: int | None = None) -> np.ndarray:
        """The value of `node` for the given inputs, with the current parameters.
        With `batch_size`, evaluates in chunks along the sample axis."""
        if not isinstance(node, Node) or node.graph is not self.graph:
            raise GraphError(f"predict: {getattr(node, 'name', node)!r} is not a node of graph "
                             f"{self.graph.name!r}")
        needed = self._needed_inputs([node])
        if not needed:
            prog = self._program("eval", (node,))
            return np.array(prog.fn(*self._args(self._plan(prog), {}))[0], copy=True)
        arrays, n = self._prepare(feeds, needed, "predict feeds")
        prog = self._program("eval", (node,))
        plan = self._plan(prog)
        if batch_size is None or batch_size >= n or node.ndim == 0 or node.shape[0] is not None:
            return np.array(prog.fn(*self._args(plan, arrays))[0], copy=True)
        bs = _pos_int(batch_size, "batch_size")
        parts = [np.array(prog.fn(*self._args(plan, {k: v[lo:lo + bs] for k, v in arrays.items()}))[0],
                          copy=True) for lo in range(0, n, bs)]
        return np.concatenate(parts, axis=0)

    # -- training --------------------------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        self.graph.values[self.optimizer.lr.name][...] = lr

    def fit(self, data: Mapping[str, np.ndarray], epochs: int = 1, batch_size: int = 32,
            shuffle: bool = True, seed: int | None = 0, validation: Mapping | None = None,
            early_stopping: EarlyStopping | None = None, verbose: bool = True,
            metrics: Mapping[str, Any] | None = None, drop_last: bool = False,
            nan_guard: bool = True, record_gradients: bool = False) -> History:
        """Train until `epochs` epochs are completed in total; returns the History.

        data / validation: dict input name -> array (samples first). metrics: name ->
        scalar Node (averaged over the epoch's mini-batches, and over the validation set)
        or callable (trainer, data) -> float (evaluated at each epoch's end).
        nan_guard: keep a copy of the previous step's parameters so that a NaN/inf loss
        can restore the last good ones (one array copy per param per step).
        record_gradients: at each epoch's end, the L2 norm of the objective's gradient per
        layer (the params of one scope) goes to `trainer.gradient_norms` (layer -> one value
        per epoch of `trainer.gradient_epochs`), on the training data (its last mini-batch
        when it has more than 1024 samples): `viz.plots.gradient_norms` draws them."""
        epochs = _pos_int(epochs, "epochs")
        batch_size = _pos_int(batch_size, "batch_size")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be a gn.EarlyStopping, got {early_stopping!r}")
        mnodes, mfns = self._split_metrics(metrics)
        needed = self._needed_inputs([self.objective, *mnodes.values()])
        train, n = self._prepare(data, needed, "training data")
        val, n_val = (self._prepare(validation, needed, "validation data")
                      if validation is not None else (None, 0))
        steps_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        if steps_per_epoch == 0:
            raise DataError(f"training data: {n} samples make no full batch of {batch_size} "
                            "(drop_last=True)")
        es = early_stopping
        if es is not None:
            if self._es_pending is not None:
                es.load_state(*self._es_pending)
                self._es_pending = None
            es.stopped_epoch = None
            monitor = es.monitor
            if monitor.startswith("val_") and val is None:
                monitor = monitor[4:]
            known = {"loss", *mnodes, *mfns}
            base = monitor[4:] if monitor.startswith("val_") else monitor
            if base not in known:
                raise ValueError(f"EarlyStopping monitors {es.monitor!r}, which fit does not "
                                 f"record (have {sorted(known)})")
            self.early_stopping = es
        # the shuffle stream: seeded at epoch 0, continued otherwise (checkpoints save it)
        if self._rng is None or self.epoch == 0:
            self._rng = np.random.default_rng(seed)
            self.seed = None if seed is None else int(seed)
        elif seed is not None and self.seed is not None and int(seed) != self.seed:
            warnings.warn(f"fit: continuing the shuffle stream seeded with {self.seed} at epoch "
                          f"{self.epoch}; seed={seed} is ignored", stacklevel=2)
        if epochs <= self.epoch:
            warnings.warn(f"fit: {self.epoch} epochs already done, epochs={epochs} is the total "
                          "to reach; nothing to do", stacklevel=2)
            return self.history
        for name in mnodes:
            self.history.metrics.setdefault(name, [])
            if val is not None:
                self.history.val_metrics.setdefault(name, [])
        for name in mfns:
            self.history.metrics.setdefault(name, [])
            if val is not None:
                self.history.val_metrics.setdefault(name, [])

        prog = self._program("step", (self.objective, *mnodes.values()))
        plan = self._plan(prog)
        values = self.graph.values
        tracked = [values[k] for k in self._tracked()]
        backups = [[np.empty_like(a) for a in tracked] for _ in range(2)] if nan_guard else None
        param_names = [p.name for p in self.params]
        opt = self.optimizer
        per_step_lr = opt.schedule is not None and opt.schedule.interval == "step"
        n_out = 1 + len(mnodes)

        fit_start = self.global_step
        from tqdm import tqdm  # the plain bar: tqdm.auto warns in notebooks without ipywidgets
        bar = tqdm(range(self.epoch, epochs), initial=self.epoch, total=epochs, unit="epoch",
                   desc=f"train {self.graph.name}", leave=False,
                   disable=not verbose or not sys.stderr.isatty())
        # a NaN/inf is caught by the guard below, with a clearer message than NumPy's warnings
        quiet = np.errstate(over="ignore", invalid="ignore", divide="ignore") if nan_guard \
            else np.errstate()
        with quiet:
            try:
                for e in bar:
                    epoch_no = e + 1
                    if opt.schedule is not None:  # (a per-step schedule: its first step's lr)
                        self._set_lr(opt.lr_at(e, self.global_step))
                    lr_used = opt.get_lr()
                    order = self._rng.permutation(n) if shuffle else None
                    sums = np.zeros(n_out)
                    seen = 0
                    for b in range(steps_per_epoch):
                        lo = b * batch_size
                        idx = order[lo:lo + batch_size] if shuffle else slice(lo, lo + batch_size)
                        batch = {k: v[idx] for k, v in train.items()}
                        m = len(next(iter(batch.values())))
                        if per_step_lr:
                            self._set_lr(opt.lr_at(e, self.global_step))
                        if backups is not None:
                            for dst, src in zip(backups[self.global_step % 2], tracked):
                                np.copyto(dst, src)
                        res = prog.fn(*self._args(plan, batch))
                        value = float(res[0])
                        if not math.isfinite(value):
                            self._diverged(backups, tracked, fit_start, epoch_no, b + 1, value,
                                           "loss became " + ("NaN" if value != value else "infinite"))
                        for j in range(n_out):
                            sums[j] += float(res[j]) * m
                        seen += m
                        self.global_step += 1
                    if backups is not None and not all(np.isfinite(values[p]).all() for p in param_names):
                        # the epoch's last update made a parameter non-finite: undo it
                        self.global_step -= 1
                        bad = [p for p in param_names if not np.isfinite(values[p]).all()]
                        self._diverged(backups, tracked, fit_start, epoch_no, steps_per_epoch,
                                       float("nan"),
                                       f"parameter(s) {bad} became non-finite", undo_last=True)
                    self.epoch = epoch_no
                    if record_gradients:
                        self._record_gradient_norms(train if n <= 1024 else batch)
                    h = self.history
                    h.epochs.append(epoch_no)
                    h.lr.append(lr_used)
                    h.loss.append(float(sums[0] / seen))
                    for j, name in enumerate(mnodes, start=1):
                        h.metrics[name].append(float(sums[j] / seen))
                    for name, f in mfns.items():
                        h.metrics[name].append(float(f(self, train)))
                    if val is not None:
                        vl, vm = self._evaluate(val, n_val, mnodes, max(batch_size, 4096))
                        h.val_loss.append(vl)
                        for name, v in vm.items():
                            h.val_metrics[name].append(v)
                        for name, f in mfns.items():
                            h.val_metrics[name].append(float(f(self, val)))
                    # best epoch: lowest (validation) loss so far, the first of equals
                    series = h.val_loss if val is not None else h.loss
                    pos = None if h.best_epoch is None else len(series) - 1 - (epoch_no - h.best_epoch)
                    if pos is None or pos < 0 or not series[-1] >= series[pos]:
                        h.best_epoch = epoch_no
                    post = {"loss": f"{h.loss[-1]:.4g}"}
                    if val is not None:
                        post["val_loss"] = f"{h.val_loss[-1]:.4g}"
                    bar.set_postfix(post, refresh=False)
                    if es is not None:
                        mon = es.monitor if val is not None or not es.monitor.startswith("val_") \
                            else es.monitor[4:]
                        stop = es.update(epoch_no, h.series(mon)[-1],
                                         {p: values[p] for p in param_names})
                        h.best_epoch = es.best_epoch
                        if stop:
                            h.stopped_epoch = epoch_no
                            if es.restore_best and es.best_params:
                                for p, arr in es.best_params.items():
                                    values[p][...] = arr
                            break
            finally:
                bar.close()
        return self.history

    def _record_gradient_norms(self, data: Mapping[str, np.ndarray]) -> None:
        """Append each layer's |dJ/dparams| (L2 over the layer's params) on `data`."""
        prog = self._program("grads", tuple(self.grads))
        res = prog.fn(*self._args(self._plan(prog), data))
        per: dict[str, float] = {}
        for p, gval in zip(self.params, res):
            layer = p.scope or p.name
            per[layer] = per.get(layer, 0.0) + float(np.sum(np.square(np.asarray(gval, dtype=np.float64))))
        for layer, s in per.items():
            self.gradient_norms.setdefault(layer, []).append(math.sqrt(s))
        self.gradient_epochs.append(self.epoch)

    def _diverged(self, backups, tracked, fit_start: int, epoch: int, step: int, value: float,
                  why: str, undo_last: bool = False):
        """Restore the parameters of the last step whose loss was finite, then raise."""
        gs = self.global_step  # the failing step (0-based)
        restored = "the parameters are left as they are (nan_guard=False)"
        if backups is not None:
            # step gs's loss is bad, so the state before step gs-1 (the last finite loss)
            # is restored; undo_last: step gs's loss was finite, only its update was bad.
            # Backups exist only for the steps of this fit call.
            kept = gs if undo_last or gs == fit_start else gs - 1
            for dst, src in zip(tracked, backups[kept % 2]):
                np.copyto(dst, src)
            self.global_step = kept
            restored = f"parameters and optimizer state restored to those before global step {kept + 1}"
        raise DivergedError(f"training diverged at epoch {epoch}, step {step} (global step "
                            f"{gs + 1}): {why}; {restored}. Lower the learning rate.",
                            epoch, step, gs + 1)

    # -- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, path) -> None:
        """Write params, optimizer state, epoch, step, RNG state, history and early-stopping
        state to one file atomically: a zip (npz layout) holding ``meta.json`` and one ``.npy``
        per array. No pickle (see `graphnn.nn.checkpoint`)."""
        from . import checkpoint
        checkpoint.save(self, path)

    def load_checkpoint(self, path) -> None:
        """Restore a checkpoint written by `save_checkpoint` for the same model; the next
        `fit` continues where it stopped. Raises FormatError on a bad or mismatched file."""
        from . import checkpoint
        checkpoint.load(self, path)
