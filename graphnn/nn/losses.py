"""Losses, built from ops (their gradients come from the ops' rules)."""
from __future__ import annotations

from ..errors import ShapeError
from ..graph import Node
from ..ops import api


def mse(pred: Node, target: Node) -> Node:
    """Mean squared error, averaged over every element."""
    api.require_node(pred, "mse"), api.require_node(target, "mse")
    try:  # shapes.broadcast raises the registry's internal Mismatch, not a ShapeError
        fits = api.shapes.broadcast(pred.shape, target.shape) == pred.shape
    except api.shapes.Mismatch:
        fits = False
    if not fits:
        raise ShapeError(f"mse: prediction {pred.name!r} {pred.shape} and target "
                         f"{target.name!r} {target.shape} do not match")
    d = pred - target
    return api.mean(d * d)


def bce_with_logits(logits: Node, target: Node) -> Node:
    """Binary cross-entropy on logits z: mean(softplus(z) - y z), stable for |z| = 1000."""
    api.require_node(logits, "bce_with_logits"), api.require_node(target, "bce_with_logits")
    if logits.shape != target.shape:
        raise ShapeError(f"bce_with_logits: logits {logits.name!r} {logits.shape} and target "
                         f"{target.name!r} {target.shape} differ")
    return api.mean(api.softplus(logits) - target * logits)


def one_hot_targets(logits: Node, target: Node, who: str) -> Node:
    """`target` as one-hot rows matching `logits` (N, K): integer labels (N,) are expanded,
    one-hot targets pass through; anything else is a ShapeError naming `who`."""
    api.require_node(logits, who), api.require_node(target, who)
    if target.shape == logits.shape[:-1] and target.dtype.kind in "iu":
        return api.one_hot(target, logits.shape[-1], logits.dtype)
    if target.shape != logits.shape:
        raise ShapeError(f"{who}: target {target.name!r} {target.shape} is neither "
                         f"integer labels {logits.shape[:-1]} nor one-hot {logits.shape}")
    return target


def softmax_cross_entropy(logits: Node, target: Node) -> Node:
    """Mean cross-entropy of softmax(logits) against integer labels (N,) or one-hot (N, K)."""
    target = one_hot_targets(logits, target, "softmax_cross_entropy")
    return -api.mean(api.sum(target * api.log_softmax(logits, -1), axis=-1))


cross_entropy = softmax_cross_entropy
