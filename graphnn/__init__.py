"""graphnn: neural networks as explicit graphs, differentiated three ways, compiled to NumPy/CuPy/CUDA.

See ../shared/DESIGN.md (in the course repository) or README.md for the tour.
"""
from .version import __version__

from .errors import DataError, DtypeError, FormatError, GraphError, GraphnnError, ShapeError
from .graph import Graph, Node
from .ops.api import (
    abs, add, broadcast_like, broadcast_to, cast, concat, conv1d, conv2d, count, div, elu, eq,
    erf, exp, expand_dims, gelu, ge, glu, gt, identity, index, le, leaky_relu, log,
    log_softmax, lt, matmul, max, maximum, mean, minimum, mul, neg, one_hot, pow, prelu, relu,
    reshape, sigmoid, sign, silu, softmax, softplus, sqrt, square, squeeze, stack, stop_gradient,
    sub, sum, swish, tanh, trainable_swish, transpose, where, zeros_like, ACTIVATIONS,
)
from .nn.losses import bce_with_logits, cross_entropy, mse, softmax_cross_entropy
from .autodiff.api import grad, jvp, vjp
from .autodiff.jacobian import hessian, jacobian
from .compile import Program, compile
from .io import load, save
from .ops.pooling import avg_pool, conv, max_pool, pad
from .onnx_import import from_onnx
from .onnx_export import to_onnx

__all__ = [n for n in dir() if not n.startswith("_")]


def __getattr__(name):
    # heavier parts load on first use
    if name == "symbolic":
        from .autodiff import symbolic
        return symbolic
    if name in ("check_gradients",):
        from .autodiff.check import check_gradients
        return check_gradients
    if name == "ntk":
        from .autodiff.ntk import ntk
        return ntk
    if name == "nn":
        from . import nn
        return nn
    if name == "optim":
        from .nn import optim
        return optim
    if name in ("Trainer", "EarlyStopping"):
        from .nn import train
        return getattr(train, name)
    raise AttributeError(f"module 'graphnn' has no attribute {name!r}")
