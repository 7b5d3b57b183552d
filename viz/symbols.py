"""SymPy vocabulary for chain-rule lines: node symbols, named activations, derivative symbols.

* a node is the symbol of its name (`yhat` prints \\hat{y}, `u2` prints u_{2});
* activations stay named: sigmoid(u2) prints \\sigma(u_2) and its local
  derivative \\sigma'(u_2) — the lectures' notation — while the explicit
  SymPy derivative is shown next to it;
* `Deriv("adj", "E", "u2")` is the symbol dE/du2 (reverse mode) and
  `Deriv("tan", "", "u2")` the tangent \\dot{u}_2 (forward mode).

Printing goes to LaTeX (`latex`), plain text (`text`) and presentation
MathML (`mathml`, rendered natively by browsers: no script, no network).
"""
from __future__ import annotations

import json
import re
from xml.sax.saxutils import escape as xml_escape

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.mathml import MathMLPresentationPrinter

FN_LATEX = {"sigmoid": r"\sigma", "tanh": r"\tanh", "relu": r"\operatorname{ReLU}",
            "leaky_relu": r"\operatorname{LeakyReLU}", "elu": r"\operatorname{ELU}",
            "gelu": r"\operatorname{GELU}", "silu": r"\operatorname{SiLU}",
            "softplus": r"\operatorname{softplus}", "sign": r"\operatorname{sign}"}
FN_TEXT = {"sigmoid": "σ", "relu": "ReLU", "leaky_relu": "LeakyReLU", "elu": "ELU", "gelu": "GELU",
           "silu": "SiLU"}

_FUNCS: dict[tuple, type] = {}


def named_fn(op: str, prime: bool = False) -> type:
    """The SymPy function `op(x)` (or its derivative `op'(x)`) that prints by name."""
    key = (op, prime)
    cls = _FUNCS.get(key)
    if cls is None:
        cls = type(f"{op}_prime" if prime else f"{op}_fn", (sp.Function,),
                   {"nargs": 1, "viz_op": op, "viz_prime": prime})
        _FUNCS[key] = cls
    return cls


class VizDot(sp.Function):
    """w . x for two vectors (prints w^T x, as in lecture 001)."""
    nargs = 2


class VizMatProd(sp.Function):
    """A @ B (order kept: function arguments do not commute)."""
    nargs = 2


def generic_fn(op: str) -> type:
    key = ("generic", op)
    cls = _FUNCS.get(key)
    if cls is None:
        cls = type(f"op_{op}", (sp.Function,), {"viz_generic": op})
        _FUNCS[key] = cls
    return cls


class Deriv(sp.Symbol):
    """dE/dname (kind "adj") or the tangent of name (kind "tan"), as one symbol."""

    def __new__(cls, kind: str, of: str, name: str):
        # (JSON, not a separator character: node names may hold any character)
        return super().__new__(cls, json.dumps([kind, of, name]), real=True)

    @property
    def parts(self):
        return tuple(json.loads(self.name))


def node_symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


# -- printers ----------------------------------------------------------------------------------

def display_name(name: str) -> str:
    """A node name as formulas show it: scope separators as dots (`attn1/Wq` -> `attn1.Wq`),
    so a scoped name never reads as a division."""
    return name.replace("/", ".")


def symbol_latex(name: str) -> str:
    return LatexPrinter()._print(sp.Symbol(display_name(name)))


def _positive_first(e):
    """x - y rather than SymPy's canonical -y + x (the lectures write yhat - y)."""
    terms = list(e.args)
    pos = [t for t in terms if not t.could_extract_minus_sign()]
    neg = [t for t in terms if t.could_extract_minus_sign()]
    return sp.Add(*(pos + neg), evaluate=False) if pos and neg else e


class _Latex(LatexPrinter):
    def __init__(self):
        super().__init__({"order": "none"})

    def _print_Add(self, e, order=None):
        return super()._print_Add(_positive_first(e), order="none")

    def _print_Function(self, e, exp=None):
        cls = type(e)
        if hasattr(cls, "viz_op"):
            tex = FN_LATEX.get(cls.viz_op, r"\operatorname{%s}" % cls.viz_op.replace("_", r"\_"))
            s = tex + ("'" if cls.viz_prime else "") + r"\left(" + self._print(e.args[0]) + r"\right)"
            return s if exp is None else f"{s}^{{{exp}}}"
        if isinstance(e, VizDot):
            return f"{self.parenthesize(e.args[0], 60)}^{{T}} {self.parenthesize(e.args[1], 60)}"
        if isinstance(e, VizMatProd):
            return f"{self.parenthesize(e.args[0], 60)} {self.parenthesize(e.args[1], 60)}"
        if hasattr(cls, "viz_generic"):
            args = ", ".join(self._print(a) for a in e.args)
            return r"\operatorname{%s}\left(%s\right)" % (cls.viz_generic.replace("_", r"\_"), args)
        return super()._print_Function(e, exp)

    def _print_Symbol(self, e, style="plain"):
        if isinstance(e, Deriv):
            kind, of, name = e.parts
            if kind == "adj":
                return r"\frac{\partial %s}{\partial %s}" % (symbol_latex(of), symbol_latex(name))
            return r"\dot{%s}" % symbol_latex(name)
        if "/" in e.name:
            return symbol_latex(e.name)
        return super()._print_Symbol(e, style)


class _Text(sp.printing.str.StrPrinter):
    def __init__(self):
        super().__init__({"order": "none"})

    def _print_Add(self, e, order=None):
        return super()._print_Add(_positive_first(e), order="none")

    def _print_Function(self, e):
        cls = type(e)
        if hasattr(cls, "viz_op"):
            return f"{cls.viz_op}{chr(39) if cls.viz_prime else ''}({self._print(e.args[0])})"
        if isinstance(e, VizDot):
            return f"{self._print(e.args[0])}.{self._print(e.args[1])}"
        if isinstance(e, VizMatProd):
            return f"{self.parenthesize(e.args[0], 60)}@{self.parenthesize(e.args[1], 60)}"
        if hasattr(cls, "viz_generic"):
            return f"{cls.viz_generic}({', '.join(self._print(a) for a in e.args)})"
        return super()._print_Function(e)

    def _print_Symbol(self, e):
        if isinstance(e, Deriv):
            kind, of, name = e.parts
            of, name = display_name(of), display_name(name)
            return f"d{of}/d{name}" if kind == "adj" else f"{name}'"
        return display_name(super()._print_Symbol(e))


_SUFFIX = {"hat": "^", "bar": "¯", "tilde": "~", "dot": "˙"}
_SPLIT = re.compile(r"^([A-Za-z]+?)(\d+)$")


class _MathML(MathMLPresentationPrinter):
    def __init__(self):
        super().__init__({"order": "none"})

    def _print_Add(self, e):
        return super()._print_Add(_positive_first(e))

    def _el(self, tag, text=None, *children):
        el = self.dom.createElement(tag)
        if text is not None:
            # SymPy's MathML printer writes text nodes raw (so that its own entities
            # survive); node names are text, escaped here (issue 14, D2: XSS)
            el.appendChild(self.dom.createTextNode(xml_escape(text)))
        for c in children:
            el.appendChild(c)
        return el

    def _name(self, name: str):
        if "/" in name:   # scope in grey, then the local name: never read as a division
            scope, _, last = name.rpartition("/")
            pre = self._el("mi", display_name(scope) + ".")
            pre.setAttribute("mathvariant", "normal")
            pre.setAttribute("mathcolor", "#607d8b")
            return self._el("mrow", None, pre, self._name(last))
        for suf, mark in _SUFFIX.items():
            if name.endswith(suf) and len(name) > len(suf):
                base = self._name(name[: -len(suf)])
                over = self._el("mover", None, base, self._el("mo", mark))
                return over
        m = _SPLIT.match(name)
        if m:
            return self._el("msub", None, self._el("mi", m.group(1)), self._el("mn", m.group(2)))
        return self._el("mi", name)

    def _print_Symbol(self, e, style="plain"):
        if isinstance(e, Deriv):
            kind, of, name = e.parts
            if kind == "adj":
                num = self._el("mrow", None, self._el("mo", "∂"), self._name(of))
                den = self._el("mrow", None, self._el("mo", "∂"), self._name(name))
                return self._el("mfrac", None, num, den)
            return self._el("mover", None, self._name(name), self._el("mo", "˙"))
        return self._name(e.name)

    def _print_Function(self, e):
        cls = type(e)
        if hasattr(cls, "viz_op"):
            head = FN_TEXT.get(cls.viz_op, cls.viz_op) + ("′" if cls.viz_prime else "")
            return self._el("mrow", None, self._el("mi", head), self._paren_comma_separated(*e.args))
        if isinstance(e, VizDot):
            a = self._el("msup", None, self._print(e.args[0]), self._el("mi", "T"))
            return self._el("mrow", None, a, self._print(e.args[1]))
        if isinstance(e, VizMatProd):
            return self._el("mrow", None, self._print(e.args[0]), self._print(e.args[1]))
        if hasattr(cls, "viz_generic"):
            return self._el("mrow", None, self._el("mi", cls.viz_generic),
                            self._paren_comma_separated(*e.args))
        return super()._print_Function(e)


def latex(e) -> str:
    return _Latex().doprint(e)


def text(e) -> str:
    return _Text().doprint(e)


def mathml(e) -> str:
    """Presentation MathML content (without the <math> wrapper)."""
    return _MathML().doprint(e)
