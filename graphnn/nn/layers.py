"""Layers: callable objects that build their parameters in the graph of their input.

    out = gn.nn.MLP([16, 16, 1], activation="relu")(x)     # params mlp/fc1/W, mlp/fc1/b, ...

Every layer is a `Layer`: `layer(x) -> Node`. On its first call it claims a scope
in `x.graph` (its `name`, or `<kind><k>` such as `fc1`, `fc2`, `conv1`, `attn1`
numbered per enclosing scope; containers `mlp` and `seq` are unnumbered the first
time, then `mlp2`, ...), creates its parameters inside it (named
`<scope path>/<local name>`, e.g. `mlp/fc1/W`) and lists them in `.params` (its
children's included). Calling it again on a node of the same graph reuses the
same parameters (weight sharing); calling it on another graph is an error.

Initialization: `init=` names an initializer of `graphnn.nn.init` for the weight
matrices (biases start at zero, normalization scales at one). `Linear` and `MLP`
default to PyTorch's nn.Linear init, ``torch_default``: W and b uniform in
+-1/sqrt(fan_in) (with it the biases are not zero; any other `init` keeps zero
biases). Convolutions default to `he_normal` when the activation is in the ReLU
family (`RELU_FAMILY`) and `xavier_normal` otherwise. `seed=` makes the values reproducible; without
it a layer draws from the rng of its parent layer, else from the graph's
(`Graph(seed=...)`).

Layouts follow torch: `x @ W` with W (in, out); convolutions NCL / NCHW with
weights (O, C, K...); attention on (N, T, d).
"""
from __future__ import annotations

import math
import numbers
import weakref
from typing import Callable, Sequence

import numpy as np

from .. import dtypes
from ..errors import GraphError, ShapeError
from ..graph import Graph, Node
from ..ops import api
from ..ops.shapes import fmt
from .init import DEFAULT_DENSE_INIT, INITIALIZERS, initialize, torch_default_bias

__all__ = ["Layer", "Linear", "MLP", "Activation", "Conv1d", "Conv2d", "SelfAttention",
           "MultiHeadAttention", "Residual", "LayerNorm", "BatchNorm", "GLU", "KAN",
           "Sequential", "RELU_FAMILY", "default_init"]

#: activations after which He initialization is the default (Xavier otherwise)
RELU_FAMILY = ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "trainable_swish")

#: scope paths claimed by layers, per graph
_CLAIMED: "weakref.WeakKeyDictionary[Graph, set[str]]" = weakref.WeakKeyDictionary()
#: scope paths (and their prefixes) in use by any node, per graph: [nodes scanned, paths]
_IN_USE: "weakref.WeakKeyDictionary[Graph, list]" = weakref.WeakKeyDictionary()
#: generators of the layers being built, innermost last (children inherit their parent's)
_RNGS: list[np.random.Generator] = []

_MASKED = -1e9  # additive attention mask: exp(-1e9 - max) is exactly 0 in float32 and float64

Activation_ = str | Callable[[Node], Node] | None


def default_init(activation) -> str:
    """`he_normal` for the ReLU family, `xavier_normal` otherwise."""
    return "he_normal" if isinstance(activation, str) and activation in RELU_FAMILY \
        else "xavier_normal"


# -- argument checks (at construction, so mistakes surface before any graph is built) --------

def _check_size(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ShapeError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_init(init) -> str | None:
    if init is None:
        return None
    try:
        initialize(init, (1, 1), np.random.default_rng(0))
    except (ValueError, TypeError):
        raise GraphError(f"unknown initializer {init!r}; choose from {INITIALIZERS}") from None
    return init


def _check_activation(act, what: str = "activation"):
    if act is None or callable(act):
        return act
    if isinstance(act, str) and act in api.ACTIVATIONS:
        return act
    raise GraphError(f"unknown {what} {act!r}; give a callable or one of {api.ACTIVATIONS}")


def _check_name(name) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not name or "/" in name:
        raise GraphError(f"layer name must be a non-empty string without '/', got {name!r}")
    return name


def _pair(v, what: str, minimum: int) -> tuple[int, int]:
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(vals) != 2 or any(isinstance(a, bool) or not isinstance(a, numbers.Integral)
                             or a < minimum for a in vals):
        raise ShapeError(f"{what} must be an int >= {minimum} or a pair of them, got {v!r}")
    return int(vals[0]), int(vals[1])


def _scopes_in_use(g: Graph) -> set[str]:
    """Every scope path (and prefix) of the graph's nodes, kept up to date incrementally,
    so scopes set by hand (`with g.scope("fc1")`) are never taken by a layer's default name."""
    state = _IN_USE.setdefault(g, [0, set()])
    nodes = g.nodes
    for n in nodes[state[0]:]:
        if n.scope:
            parts = n.scope.split("/")
            state[1].update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
    state[0] = len(nodes)
    return state[1]


# -- the base class ------------------------------------------------------------------------------

class Layer:
    """Base of all layers. Subclasses implement `forward(x)` using `self.param(...)`.

    Attributes after the first call: `graph`, `scope` (full scope path),
    `params` (parameter nodes, children's included, in creation order)."""

    kind = "layer"     # base of the default scope name
    numbered = True    # fc1, fc2 ... (False: mlp, mlp2, ...)

    def __init__(self, name: str | None = None, init: str | None = None,
                 seed: int | None = None):
        self.name = _check_name(name)
        self.init = _check_init(init)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise GraphError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.graph: Graph | None = None
        self.scope: str | None = None
        self.params: list[Node] = []
        self._own: dict[str, Node] = {}
        self._rng: np.random.Generator | None = None
        self._graph_building: Graph | None = None

    def __repr__(self) -> str:
        where = f" scope={self.scope!r}" if self.scope else ""
        return f"<{type(self).__name__}{where} params={len(self.params)}>"

    # -- calling -------------------------------------------------------------------------
    def __call__(self, x: Node) -> Node:
        if not isinstance(x, Node):
            raise GraphError(f"{type(self).__name__}: input must be a Node, got {type(x).__name__}")
        g = x.graph
        first = self.graph is None
        if not first and self.graph is not g:
            raise GraphError(f"{type(self).__name__} {self.scope!r} was built in graph "
                             f"{self.graph.name!r}; it cannot be called on {x.name!r} of graph "
                             f"{g.name!r} (make a new layer)")
        scope = self._claim_scope(g) if first else self.scope
        if self.seed is not None:
            rng = np.random.default_rng(self.seed)
        else:
            rng = _RNGS[-1] if _RNGS else g.rng
        start = len(g)
        self._graph_building, self._rng, self.scope = g, rng, scope
        _RNGS.append(rng)
        try:
            with g.provenance(scope=scope):
                y = self.forward(x)
        except BaseException:
            if first:  # leave the layer unbuilt (its scope stays claimed)
                self.scope, self._own = None, {}
            raise
        finally:
            _RNGS.pop()
            self._rng = None
        if not isinstance(y, Node):
            raise GraphError(f"{type(self).__name__}.forward must return a Node, got {y!r}")
        if first:
            self.graph = g
            self.params = [n for n in g.nodes[start:] if n.op == "param"]
        return y

    def forward(self, x: Node) -> Node:  # pragma: no cover - abstract
        raise NotImplementedError

    def _claim_scope(self, g: Graph) -> str:
        parent = g.current_scope
        prefix = parent + "/" if parent else ""
        claimed = _CLAIMED.setdefault(g, set())
        if self.name is not None:
            path = prefix + self.name
            if path in claimed:
                raise GraphError(f"{type(self).__name__}: scope {path!r} is already used by "
                                 f"another layer in graph {g.name!r}; give a different name")
        else:
            used = _scopes_in_use(g)
            k = 1
            while True:
                local = self.kind if (k == 1 and not self.numbered) else f"{self.kind}{k}"
                path = prefix + local
                if path not in used and path not in claimed:
                    break
                k += 1
        claimed.add(path)
        return path

    # -- helpers for forward -------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self._graph_building.dtype

    def param(self, local: str, shape: tuple, init: str | None = None,
              fill: float | None = None, draw_shape: tuple | None = None,
              bias_fan_in: int | None = None) -> Node:
        """The parameter `<scope>/<local>`: created on the first call, reused after.

        Values: `fill` (a constant), else PyTorch's bias init U(+-1/sqrt(bias_fan_in)) when
        `bias_fan_in` is given, else initializer `init` (default xavier_normal)
        drawn with the fans of `draw_shape` (default `shape`) and reshaped."""
        shape = tuple(int(d) for d in shape)
        node = self._own.get(local)
        if node is not None:
            if node.shape != shape:  # pragma: no cover - guarded by the input checks
                raise ShapeError(f"{type(self).__name__} {self.scope!r}: parameter {node.name!r} "
                                 f"has shape {node.shape}, this call needs {shape}")
            return node
        g = self._graph_building
        if fill is not None:
            arr = np.full(shape, fill, dtype=np.float64)
        elif bias_fan_in is not None:
            arr = torch_default_bias(bias_fan_in, shape, self._rng)
        else:
            arr = initialize(init or "xavier_normal", draw_shape or shape, self._rng)
            arr = arr.reshape(shape)
        node = g.param(f"{self.scope}/{local}", value=arr.astype(g.dtype), dtype=g.dtype)
        self._own[local] = node
        return node

    def _features(self, x: Node, axis: int, stored: str, what: str = "features") -> int:
        """The size of `x` along `axis`, checked against (and on first call saved to) `stored`."""
        n = x.shape[axis] if -x.ndim <= axis < x.ndim else None
        if n is None:
            raise ShapeError(f"{type(self).__name__} {self.scope!r}: input {x.name!r} "
                             f"{fmt(x.shape)} needs a fixed number of {what} on axis {axis}")
        expect = getattr(self, stored)
        if expect is not None and n != expect:
            raise ShapeError(f"{type(self).__name__} {self.scope!r}: input {x.name!r} has "
                             f"shape {fmt(x.shape)} with {n} {what} on axis {axis}; "
                             f"the layer expects {expect}")
        setattr(self, stored, n)
        return n

    def _ndim(self, x: Node, allowed: Sequence[int], layout: str) -> None:
        if x.ndim not in allowed:
            raise ShapeError(f"{type(self).__name__} {self.scope!r}: input {x.name!r} has shape "
                             f"{fmt(x.shape)}; expected {layout}")

    def _activate(self, y: Node, activation, axis: int = -1) -> Node:
        """Apply an activation; prelu / trainable_swish get per-unit parameters along `axis`."""
        if activation is None:
            return y
        if callable(activation):
            out = activation(y)
            if not isinstance(out, Node):
                raise GraphError(f"activation {activation!r} must return a Node, got {out!r}")
            return out
        if activation in ("prelu", "trainable_swish"):
            ax = axis % y.ndim
            units = y.shape[ax]
            pshape = (units,) + (1,) * (y.ndim - ax - 1)
            if activation == "prelu":  # slope 0.25 for x < 0 (torch's default)
                return api.prelu(y, self.param("act_a", pshape, fill=0.25))
            # (c x + d) sigmoid(a x + b), started at a=c=1, b=d=0: SiLU
            a, b, c, d = (self.param(f"act_{p}", pshape, fill=v)
                          for p, v in (("a", 1.0), ("b", 0.0), ("c", 1.0), ("d", 0.0)))
            return api.trainable_swish(y, a, b, c, d)
        return getattr(api, activation)(y)


# -- dense ------------------------------------------------------------------------------------------

class Linear(Layer):
    """y = act(x @ W + b) for x (..., in); W (in, out), b (out,).

    `in_features` is read from the input on the first call (or checked if given)."""

    kind = "fc"

    def __init__(self, out_features: int, bias: bool = True, activation: Activation_ = None,
                 init: str | None = None, seed: int | None = None, name: str | None = None,
                 in_features: int | None = None):
        super().__init__(name, init, seed)
        self.out_features = _check_size(out_features, "Linear: out_features")
        self.in_features = None if in_features is None else \
            _check_size(in_features, "Linear: in_features")
        self.bias = bool(bias)
        self.activation = _check_activation(activation)

    def forward(self, x: Node) -> Node:
        self._ndim(x, range(1, 64), "at least 1-d (..., in_features)")
        n_in = self._features(x, -1, "in_features")
        init = self.init or DEFAULT_DENSE_INIT
        W = self.param("W", (n_in, self.out_features), init)
        y = x @ W
        if self.bias:
            torch_like = init in ("torch_default", "torch", "pytorch")
            y = y + self.param("b", (self.out_features,), fill=None if torch_like else 0.0,
                               bias_fan_in=n_in if torch_like else None)
        return self._activate(y, self.activation)


class Activation(Layer):
    """An activation as a layer (for Sequential); prelu/trainable_swish create per-unit params
    along `axis` (use axis=1 after a convolution)."""

    kind = "act"

    def __init__(self, activation, axis: int = -1, name: str | None = None):
        super().__init__(name)
        if activation is None:
            raise GraphError("Activation: give an activation name or a callable")
        self.activation = _check_activation(activation)
        self.axis = int(axis)
        self.units = None

    def forward(self, x: Node) -> Node:
        if self.activation in ("prelu", "trainable_swish"):
            self._features(x, self.axis, "units", "units")
        return self._activate(x, self.activation, self.axis)


class MLP(Layer):
    """Linear layers `fc1 ... fcn` with out sizes `sizes`; hidden ones get `activation`,
    the last `final_activation` (None: linear)."""

    kind = "mlp"
    numbered = False

    def __init__(self, sizes: Sequence[int], activation: Activation_ = "relu",
                 final_activation: Activation_ = None, bias: bool = True,
                 init: str | None = None, seed: int | None = None, name: str | None = None):
        super().__init__(name, init, seed)
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
            raise ShapeError(f"MLP: sizes must be a non-empty list of layer widths, got {sizes!r}")
        self.sizes = [_check_size(s, f"MLP: size {s!r} in {list(sizes)}") for s in sizes]
        self.activation = _check_activation(activation)
        self.final_activation = _check_activation(final_activation, "final_activation")
        last = len(self.sizes) - 1
        self.layers = [Linear(n, bias=bias,
                              activation=activation if i < last else final_activation,
                              init=init, name=f"fc{i + 1}") for i, n in enumerate(self.sizes)]

    def forward(self, x: Node) -> Node:
        for layer in self.layers:
            x = layer(x)
        return x


class GLU(Layer):
    """Gated linear unit (lecture 000 eq. 17): sigmoid(x W1 + b1) * (x W2 + b2)."""

    kind = "glu"

    def __init__(self, out_features: int, bias: bool = True, init: str | None = None,
                 seed: int | None = None, name: str | None = None):
        super().__init__(name, init, seed)
        self.out_features = _check_size(out_features, "GLU: out_features")
        self.bias = bool(bias)
        self.in_features = None

    def forward(self, x: Node) -> Node:
        self._ndim(x, range(1, 64), "at least 1-d (..., in_features)")
        n_in = self._features(x, -1, "in_features")
        shape = (n_in, self.out_features)
        W1 = self.param("W1", shape, self.init or "xavier_normal")
        W2 = self.param("W2", shape, self.init or "xavier_normal")
        gate, value = x @ W1, x @ W2
        if self.bias:
            gate = gate + self.param("b1", (self.out_features,), fill=0.0)
            value = value + self.param("b2", (self.out_features,), fill=0.0)
        return api.sigmoid(gate) * value


class KAN(Layer):
    """Kolmogorov-Arnold layer (lecture 000 eq. 19): h_i = sum_j phi_ij(x_j).

    Each edge (j -> i) has its own trainable activation on a fixed basis:

        phi_ij(t) = W_ij * silu(t) + sum_k alpha_ijk * exp(-((t - c_k) / s)^2)

    with `grid_size` Gaussian radial basis functions centred on the uniform grid
    c_1..c_K over `grid_range` (width s = grid spacing), plus a SiLU base term
    (as in Liu et al. 2024, where W_ij plays the base weight and the spline
    coefficients are absorbed into alpha). The weight W_ij of eq. 19 is folded into
    phi_ij. Parameters: W (in, out), alpha (in, K, out)."""

    kind = "kan"

    def __init__(self, out_features: int, grid_size: int = 8,
                 grid_range: tuple[float, float] = (-2.0, 2.0), init: str | None = None,
                 seed: int | None = None, name: str | None = None):
        super().__init__(name, init, seed)
        self.out_features = _check_size(out_features, "KAN: out_features")
        self.grid_size = _check_size(grid_size, "KAN: grid_size")
        if self.grid_size < 2:
            raise ShapeError(f"KAN: grid_size must be at least 2, got {grid_size}")
        try:
            lo, hi = (float(v) for v in grid_range)
        except (TypeError, ValueError):
            raise GraphError(f"KAN: grid_range must be a pair of numbers, got {grid_range!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise GraphError(f"KAN: grid_range must be finite with low < high, got {grid_range!r}")
        self.grid_range = (lo, hi)
        self.centers = np.linspace(lo, hi, self.grid_size)
        self.width = (hi - lo) / (self.grid_size - 1)
        self.in_features = None

    def basis(self, x: Node) -> Node:
        """psi_k(x_j) for every feature j: shape (..., in, K)."""
        xe = api.reshape(x, x.shape + (1,))
        c = x.graph.const(None, self.centers.astype(x.dtype if dtypes.is_float(x.dtype)
                                                    else x.graph.dtype))
        z = (xe - c) * (1.0 / self.width)
        return api.exp(-(z * z))

    def forward(self, x: Node) -> Node:
        self._ndim(x, range(1, 64), "at least 1-d (..., in_features)")
        n_in = self._features(x, -1, "in_features")
        K, n_out = self.grid_size, self.out_features
        W = self.param("W", (n_in, n_out), self.init or "xavier_normal")
        alpha = self.param("alpha", (n_in, K, n_out), self.init or "xavier_normal",
                           draw_shape=(n_in * K, n_out))  # drawn as the matrix it acts as
        psi = api.reshape(self.basis(x), x.shape[:-1] + (n_in * K,))
        return api.silu(x) @ W + psi @ api.reshape(alpha, (n_in * K, n_out))


# -- convolution -------------------------------------------------------------------------------------

class _Conv(Layer):
    kind = "conv"
    spatial = 2

    def __init__(self, out_channels, kernel_size, stride, padding, bias, activation, init,
                 seed, name):
        super().__init__(name, init, seed)
        cls = type(self).__name__
        self.out_channels = _check_size(out_channels, f"{cls}: out_channels")
        self.bias = bool(bias)
        self.activation = _check_activation(activation)
        self.in_channels = None

    def forward(self, x: Node) -> Node:
        layout = "(N, C, L)" if self.spatial == 1 else "(N, C, H, W)"
        self._ndim(x, (2 + self.spatial,), layout)
        c = self._features(x, 1, "in_channels", "channels")
        W = self.param("W", (self.out_channels, c) + self.kernel,
                       self.init or default_init(self.activation))
        y = self.conv(x, W)
        if self.bias:
            b = self.param("b", (self.out_channels,), fill=0.0)
            y = y + api.reshape(b, (self.out_channels,) + (1,) * self.spatial)
        return self._activate(y, self.activation, axis=1)


class Conv1d(_Conv):
    """torch.nn.Conv1d: x (N, C, L), W (O, C, K), b (O,)."""

    spatial = 1

    def __init__(self, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, activation: Activation_ = None, init: str | None = None,
                 seed: int | None = None, name: str | None = None):
        super().__init__(out_channels, kernel_size, stride, padding, bias, activation, init,
                         seed, name)
        self.kernel = (_check_size(kernel_size, "Conv1d: kernel_size"),)
        self.stride = _check_size(stride, "Conv1d: stride")
        if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
            raise ShapeError(f"Conv1d: padding must be an int >= 0, got {padding!r}")
        self.padding = int(padding)

    def conv(self, x, W):
        return api.conv1d(x, W, stride=self.stride, padding=self.padding)


class Conv2d(_Conv):
    """torch.nn.Conv2d: x (N, C, H, W), W (O, C, KH, KW), b (O,); ints or (h, w) pairs."""

    spatial = 2

    def __init__(self, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 activation: Activation_ = None, init: str | None = None,
                 seed: int | None = None, name: str | None = None):
        super().__init__(out_channels, kernel_size, stride, padding, bias, activation, init,
                         seed, name)
        self.kernel = _pair(kernel_size, "Conv2d: kernel_size", 1)
        self.stride = _pair(stride, "Conv2d: stride", 1)
        self.padding = _pair(padding, "Conv2d: padding", 0)

    def conv(self, x, W):
        return api.conv2d(x, W, stride=self.stride, padding=self.padding)


# -- attention ----------------------------------------------------------------------------------------

def _causal_mask(layer: Layer, x: Node, T) -> Node:
    if T is None:
        raise ShapeError(f"{type(layer).__name__} {layer.scope!r}: a causal mask needs a fixed "
                         f"sequence length; input {x.name!r} has shape {fmt(x.shape)}")
    mask = np.triu(np.full((T, T), _MASKED), k=1).astype(layer.dtype)
    return x.graph.const(None, mask)


def _swap_last(x: Node) -> Node:
    axes = list(range(x.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return api.transpose(x, tuple(axes))


class _Attention(Layer):
    def __init__(self, name, init, seed, causal: bool, bias: bool):
        super().__init__(name, init, seed)
        self.causal = bool(causal)
        self.bias = bool(bias)
        self.in_features = None
        self.attention: Node | None = None

    def _proj(self, x: Node, local: str, n_in: int, n_out: int) -> Node:
        """x @ W<local> (+ b<local>)."""
        y = x @ self.param(f"W{local}", (n_in, n_out), self.init or "xavier_normal")
        if self.bias:
            y = y + self.param(f"b{local}", (n_out,), fill=0.0)
        return y


class SelfAttention(_Attention):
    """softmax(Q K^T / sqrt(d_k) [+ causal mask]) V with (Q, K, V) = (X W_Q, X W_K, X W_V)
    (lecture 002) on x (N, T, d_in); output (N, T, d_model). `.attention` is the
    softmax node of the last call (N, T, T)."""

    kind = "attn"

    def __init__(self, d_model: int, d_k: int | None = None, causal: bool = False,
                 bias: bool = False, init: str | None = None, seed: int | None = None,
                 name: str | None = None):
        super().__init__(name, init, seed, causal, bias)
        self.d_model = _check_size(d_model, "SelfAttention: d_model")
        self.d_k = self.d_model if d_k is None else _check_size(d_k, "SelfAttention: d_k")

    def forward(self, x: Node) -> Node:
        self._ndim(x, (3,), "(N, T, d)")
        d = self._features(x, -1, "in_features")
        q = self._proj(x, "q", d, self.d_k)
        k = self._proj(x, "k", d, self.d_k)
        v = self._proj(x, "v", d, self.d_model)
        scores = (q @ _swap_last(k)) * (1.0 / math.sqrt(self.d_k))
        if self.causal:
            scores = scores + _causal_mask(self, x, x.shape[1])
        self.attention = api.softmax(scores, axis=-1)
        return self.attention @ v


class MultiHeadAttention(_Attention):
    """Linear(Concat(SA_1, ..., SA_h)) (lecture 002), as torch.nn.MultiheadAttention
    (batch_first=True, self-attention): Q, K, V = x W_q + b_q, ...; each of `heads` heads
    attends on its d_model/heads slice; the concatenation goes through W_o + b_o.
    `.attention` is the softmax node of the last call (N, heads, T, T)."""

    kind = "mha"

    def __init__(self, d_model: int, heads: int, causal: bool = False, bias: bool = True,
                 init: str | None = None, seed: int | None = None, name: str | None = None):
        super().__init__(name, init, seed, causal, bias)
        self.d_model = _check_size(d_model, "MultiHeadAttention: d_model")
        self.heads = _check_size(heads, "MultiHeadAttention: heads")
        if self.d_model % self.heads:
            raise ShapeError(f"MultiHeadAttention: d_model={d_model} is not divisible by "
                             f"heads={heads}")

    def forward(self, x: Node) -> Node:
        self._ndim(x, (3,), "(N, T, d)")
        d = self._features(x, -1, "in_features")
        N, T = x.shape[0], x.shape[1]
        H, dh = self.heads, self.d_model // self.heads

        def split(y):  # (N, T, H*dh) -> (N, H, T, dh)
            return api.transpose(api.reshape(y, (N, T, H, dh)), (0, 2, 1, 3))

        q, k, v = (split(self._proj(x, p, d, self.d_model)) for p in ("q", "k", "v"))
        scores = (q @ _swap_last(k)) * (1.0 / math.sqrt(dh))
        if self.causal:
            scores = scores + _causal_mask(self, x, T)
        self.attention = api.softmax(scores, axis=-1)
        heads = api.transpose(self.attention @ v, (0, 2, 1, 3))     # (N, T, H, dh)
        return self._proj(api.reshape(heads, (N, T, self.d_model)), "o", self.d_model,
                          self.d_model)


# -- normalization ----------------------------------------------------------------------------------

def _normalize(x: Node, axes: tuple, eps: float) -> Node:
    """(x - mean) / sqrt(var + eps) over `axes`, biased variance (as torch)."""
    d = x - api.mean(x, axis=axes, keepdims=True)
    return d / api.sqrt(api.mean(d * d, axis=axes, keepdims=True) + eps)


class _Norm(Layer):
    """Shared constructor of the normalization layers."""

    def __init__(self, eps: float = 1e-5, affine: bool = True, name: str | None = None):
        super().__init__(name)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
            raise GraphError(f"{type(self).__name__}: eps must be a number >= 0, got {eps!r}")
        self.eps, self.affine, self.features = float(eps), bool(affine), None


class LayerNorm(_Norm):
    """(x - mean) / sqrt(var + eps) over the last axis (biased variance, as torch),
    then * gamma + beta (per feature) when `affine`."""

    kind = "ln"

    def forward(self, x: Node) -> Node:
        self._ndim(x, range(1, 64), "at least 1-d (..., features)")
        n = self._features(x, -1, "features")
        y = _normalize(x, (-1,), self.eps)
        if self.affine:
            y = y * self.param("gamma", (n,), fill=1.0) + self.param("beta", (n,), fill=0.0)
        return y


class BatchNorm(_Norm):
    """Training-mode batch normalization (torch BatchNorm1d/2d with track_running_stats
    off): statistics over the batch axis 0 (and the spatial axes of (N, C, L) and
    (N, C, H, W) inputs), biased variance; per-feature gamma, beta when `affine`.
    Features are the last axis of 2-d input, axis 1 otherwise. Running averages for
    inference are not kept."""

    kind = "bn"

    def forward(self, x: Node) -> Node:
        self._ndim(x, (2, 3, 4), "(N, C), (N, C, L) or (N, C, H, W)")
        n = self._features(x, 1, "features")
        axes = (0,) + tuple(range(2, x.ndim))
        y = _normalize(x, axes, self.eps)
        if self.affine:
            pshape = (n,) + (1,) * (x.ndim - 2)
            y = y * self.param("gamma", pshape, fill=1.0) + self.param("beta", pshape, fill=0.0)
        return y


# -- composition ------------------------------------------------------------------------------------

class Residual(Layer):
    """x + fn(x); fn (a layer or any callable Node -> Node) must keep the shape of x."""

    kind = "res"

    def __init__(self, fn: Callable[[Node], Node], name: str | None = None):
        super().__init__(name)
        if not callable(fn):
            raise GraphError(f"Residual: fn must be a layer or a callable, got {fn!r}")
        self.fn = fn

    def forward(self, x: Node) -> Node:
        y = self.fn(x)
        if not isinstance(y, Node):
            raise GraphError(f"Residual {self.scope!r}: fn returned {y!r}, not a Node")
        if y.shape != x.shape:
            raise ShapeError(f"Residual {self.scope!r}: fn maps {x.name!r} {fmt(x.shape)} to "
                             f"{y.name!r} {fmt(y.shape)}; a residual needs the same shape")
        return x + y


class Sequential(Layer):
    """Layers (or callables) applied in order, in one scope."""

    kind = "seq"
    numbered = False

    def __init__(self, *layers, name: str | None = None):
        super().__init__(name)
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise GraphError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise GraphError(f"Sequential: item {i} ({layer!r}) is not a layer or callable")
        self.layers = list(layers)

    def forward(self, x: Node) -> Node:
        for layer in self.layers:
            x = layer(x)
            if not isinstance(x, Node):
                raise GraphError(f"Sequential {self.scope!r}: {layer!r} returned {x!r}, not a Node")
        return x
