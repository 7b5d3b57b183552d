"""Layers, losses, initializers, regularizers, optimizers and training.

Names load lazily from their modules: layers.py (Linear, MLP, Conv1d, Conv2d,
SelfAttention, MultiHeadAttention, Residual, LayerNorm, BatchNorm, GLU, KAN),
regularization.py (L1, L2, ElasticNet), losses.py, init.py, optim.py, train.py,
schedules.py.
"""
import importlib

_HOME = {
    "layers": ("Linear", "MLP", "Conv1d", "Conv2d", "SelfAttention", "MultiHeadAttention",
               "Residual", "LayerNorm", "BatchNorm", "GLU", "KAN", "Sequential", "Layer",
               "Activation"),
    "regularization": ("L1", "L2", "ElasticNet"),
    "losses": ("mse", "bce_with_logits", "softmax_cross_entropy", "cross_entropy"),
    "init": ("initialize", "INITIALIZERS"),
    "train": ("Trainer", "EarlyStopping"),
}
_WHERE = {name: mod for mod, names in _HOME.items() for name in names}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    if name in ("layers", "regularization", "losses", "init", "train", "optim", "schedules"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'graphnn.nn' has no attribute {name!r}")


def __dir__():
    return sorted(list(_WHERE) + list(_HOME) + ["optim", "schedules"])
