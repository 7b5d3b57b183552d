"""`gn.grad`, `gn.vjp`, `gn.jvp`: one entry point, three modes."""
from __future__ import annotations

from typing import Sequence

from ..errors import GraphError
from ..graph import Node
from . import forward, reverse

MODES = ("reverse", "forward", "symbolic")


def grad(y: Node, wrt: Node | Sequence[Node], mode: str = "reverse",
         disconnected: str = "zeros", shapes: dict | None = None) -> list[Node]:
    """Gradient nodes of scalar `y` with respect to each node in `wrt`.

    mode: "reverse" (one backward pass, the default), "forward" (one JVP per
    element of each w: fine for few parameters), or "symbolic" (SymPy closed form,
    cse'd and put back into the graph; small fixed shapes only).
    disconnected: "zeros" gives zero gradients for nodes y does not depend on,
    "raise" raises GraphError instead.
    shapes (symbolic mode only): binds batch dimensions, e.g. {"x": (4, 2)}; the
    closed form is then valid for that batch size only."""
    if isinstance(wrt, Node):
        wrt = [wrt]
    if not isinstance(y, Node):
        raise GraphError(f"grad: y must be a Node, got {type(y).__name__} {_show(y)}")
    try:
        wrt = list(wrt)
    except TypeError:
        raise GraphError(f"grad: wrt must be a Node or a list of Nodes, got "
                         f"{type(wrt).__name__}") from None
    for w in wrt:
        if not isinstance(w, Node):
            raise GraphError(f"grad: wrt holds {type(w).__name__} {_show(w)}; grad can only "
                             "differentiate with respect to Nodes")
    if disconnected not in ("zeros", "raise"):
        raise GraphError(f"disconnected must be 'zeros' or 'raise', got {disconnected!r}")
    if shapes is not None and mode != "symbolic":
        raise GraphError("shapes= binds batch sizes for symbolic mode only")
    if mode == "reverse":
        return reverse.grad(y, wrt, disconnected)
    if mode == "forward":
        return forward.grad(y, wrt, disconnected)
    if mode == "symbolic":
        from . import symbolic
        return symbolic.grad(y, wrt, disconnected, shapes=shapes)
    raise GraphError(f"unknown mode {mode!r}; choose from {MODES}")


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


vjp = reverse.vjp
jvp = forward.jvp
