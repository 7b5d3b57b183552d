"""How the step pages write local derivatives: the lectures' forms and the rules of
ops that are not element-wise, as LaTeX and as MathML (never raw LaTeX on a page).

* element-wise activations: sigma' = sigma (1 - sigma), tanh' = 1 - tanh^2, ReLU' is
  the step function step(z) (1 where z > 0, else 0), as lecture 004 writes them;
* matmul, transpose, sum, mean, softmax, reshape-like ops: the VJP rule (reverse mode,
  in the lecture's dE/dx notation) or the JVP rule (forward mode, tangents as dotted
  names), with the node names of the graph.
"""
from __future__ import annotations

import sympy as sp

from graphnn.graph import Node

from . import symbols as S

_MOVES = ("reshape", "cast", "broadcast_like", "broadcast_to", "index", "concat", "expand_dims",
          "squeeze", "stack")


def lecture_form(op: str, arg: sp.Expr) -> sp.Expr | None:
    """The derivative of activation `op` at `arg` as the lectures write it (None: no special form)."""
    if op == "sigmoid":
        s = S.named_fn("sigmoid")(arg)
        return sp.Mul(s, 1 - s, evaluate=False)
    if op == "tanh":
        return 1 - S.named_fn("tanh")(arg) ** 2
    if op == "relu":
        return S.named_fn("step")(arg)
    return None


class _Parts:
    """A rule as a list of pieces, each printed to LaTeX and MathML."""

    def __init__(self):
        self.tex: list[str] = []
        self.mml: list[str] = []

    def expr(self, e) -> "_Parts":
        self.tex.append(S.latex(e))
        self.mml.append(S.mathml(e))
        return self

    def op(self, tex: str, mml: str) -> "_Parts":
        self.tex.append(tex)
        self.mml.append(f"<mo>{mml}</mo>")
        return self

    def text(self, words: str) -> "_Parts":
        from .escape import html_text
        tex = "".join("\\" + c if c in "_{}%$#&" else c for c in words)
        tex = tex.replace("^", r"\^{}").replace("~", r"\~{}").replace("\\", r"\textbackslash{}") \
            if "\\" in words else tex
        self.tex.append(r"\text{ %s }" % tex)
        self.mml.append(f"<mtext>&#160;{html_text(words)}&#160;</mtext>")
        return self

    def sup(self, e, mark: str) -> "_Parts":
        self.tex.append("{%s}^{%s}" % (S.latex(e), mark))
        self.mml.append(f"<msup><mrow>{S.mathml(e)}</mrow><mi>{mark}</mi></msup>")
        return self

    def result(self) -> tuple[str, str]:
        return " ".join(self.tex), "<mrow>" + "".join(self.mml) + "</mrow>"


def _sym(n: Node):
    return S.node_symbol(n.name)


def _tan(n: Node):
    return S.Deriv("tan", "", n.name)


def rule(v: Node, k: int, kind: str, of: str, count: int | None = None) -> tuple[str, str]:
    """(LaTeX, MathML) of the rule that takes what flows into op node `v` through input k.

    Reverse mode: dE/d(input k) in terms of dE/dv. Forward mode: input k's part of v's
    tangent, in terms of the tangent of input k."""
    u = v.inputs[k]
    p = _Parts()
    if kind == "backward":
        lhs, inc = S.Deriv("adj", of, u.name), S.Deriv("adj", of, v.name)
        p.expr(lhs).op("=", "=")
        if v.op == "matmul" and len(v.inputs) == 2:
            if k == 0:
                p.expr(inc).sup(_sym(v.inputs[1]), "T")
            else:
                p.sup(_sym(v.inputs[0]), "T").expr(inc)
        elif v.op == "transpose":
            p.sup(inc, "T")
        elif v.op == "sum":
            p.expr(inc).text("copied to every summed element")
        elif v.op == "mean":
            p.expr(sp.Rational(1, count) * inc if count else sp.Symbol("1/N") * inc)
            p.text("for every averaged element")
        elif v.op == "softmax":
            s = _sym(v)
            p.expr(s).op(r"\odot", "&#8857;").op("(", "(").expr(inc).op("-", "&#8722;")
            p.op(r"\sum", "&#8721;").expr(inc).op(r"\odot", "&#8857;").expr(s).op(")", ")")
        elif v.op in _MOVES:
            p.expr(inc).text(f"moved back to the shape of {u.name} ({v.op})")
        else:
            p.text(f"VJP rule of {v.op} applied to").expr(inc)
        return p.result()
    # forward mode: this input's part of v's tangent
    t = _tan(u)
    p.expr(_tan(v)).op(r"\mathrel{+}=", "+=")
    if v.op == "matmul" and len(v.inputs) == 2:
        if k == 0:
            p.expr(S.VizMatProd(t, _sym(v.inputs[1])))
        else:
            p.expr(S.VizMatProd(_sym(v.inputs[0]), t))
    elif v.op == "transpose":
        p.sup(t, "T")
    elif v.op == "sum":
        p.op(r"\sum", "&#8721;").expr(t)
    elif v.op == "mean":
        p.expr(sp.Rational(1, count) if count else sp.Symbol("1/N")).op(r"\sum", "&#8721;").expr(t)
    elif v.op == "softmax":
        s = _sym(v)
        p.expr(s).op(r"\odot", "&#8857;").op("(", "(").expr(t).op("-", "&#8722;")
        p.op(r"\sum", "&#8721;").expr(s).op(r"\odot", "&#8857;").expr(t).op(")", ")")
    elif v.op in _MOVES:
        p.expr(t).text(f"moved to the shape of {v.name} ({v.op})")
    else:
        p.text(f"JVP rule of {v.op} applied to").expr(t)
    return p.result()
