"""`steps_html`: one self-contained HTML page to step through backprop (or forward mode).

No network: the graph is inline SVG (highlighted per step with CSS classes),
equations are presentation MathML (browsers render it natively) with the
LaTeX source alongside, and the script is inline. Previous/Next buttons and
the arrow keys move between steps.
"""
from __future__ import annotations

import os
import re

import numpy as np
import sympy as sp

from . import evaluate as ev
from . import symbols as S
from .escape import html_text as h

_CSS = """
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:0;display:flex;flex-direction:column;height:100vh}
header{padding:8px 14px;background:#263238;color:#fff;display:flex;gap:12px;align-items:center}
header button{font-size:15px;padding:4px 14px}
main{display:flex;flex:1;min-height:0}
#graph{flex:1.2;overflow:auto;border-right:1px solid #ccc;padding:6px}
#graph svg{max-width:none;height:auto}
#steps{flex:1;overflow:auto;padding:10px 16px}
.step h2{font-size:17px;margin:4px 0 10px;overflow-wrap:anywhere}
.step h2 .def{font-weight:normal;color:#37474f}
.eq{overflow-x:auto;overflow-y:hidden}
.local math{math-style:normal;font-size:17px}
.eq{margin:8px 0;font-size:18px}
.local{margin:4px 0 4px 14px;font-size:16px}
pre{background:#f5f5f5;padding:6px;white-space:pre-wrap}
details{margin-top:8px;color:#555}
g.node.current ellipse,g.node.current polygon,g.node.current path{stroke:#ff0066;stroke-width:5px}
g.node.current text{font-weight:bold}
"""

_JS = """
(function () {
  var steps = Array.prototype.slice.call(document.querySelectorAll('section.step'));
  var prev = document.getElementById('prev'), next = document.getElementById('next');
  var counter = document.getElementById('counter');
  var current = 0;
  function show(k) {
    if (!steps.length) { counter.textContent = '0 / 0'; return; }
    current = Math.max(0, Math.min(steps.length - 1, k));
    steps.forEach(function (s, j) { s.hidden = (j !== current); });
    Array.prototype.forEach.call(document.querySelectorAll('g.node.current'),
      function (el) { el.classList.remove('current'); });
    var ids = (steps[current].getAttribute('data-node') || '').split(' ').filter(Boolean);
    ids.slice(1).forEach(function (id) {
      var other = document.getElementById(id);
      if (other) { other.classList.add('current'); }
    });
    var el = ids.length ? document.getElementById(ids[0]) : null;
    if (el) {
      el.classList.add('current');
      // bring the highlighted node into view in the graph pane (not the whole page)
      var pane = document.getElementById('graph');
      var r = el.getBoundingClientRect(), p = pane.getBoundingClientRect();
      pane.scrollTop += (r.top + r.height / 2) - (p.top + p.height / 2);
      pane.scrollLeft += (r.left + r.width / 2) - (p.left + p.width / 2);
    }
    counter.textContent = (current + 1) + ' / ' + steps.length;
    prev.disabled = current === 0;
    next.disabled = current === steps.length - 1;
    document.body.setAttribute('data-step', String(current));
  }
  prev.addEventListener('click', function () { show(current - 1); });
  next.addEventListener('click', function () { show(current + 1); });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { show(current + 1); e.preventDefault(); }
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { show(current - 1); e.preventDefault(); }
  });
  show(0);
})();
"""


def _math(content: str, display: bool = True) -> str:
    attr = ' display="block"' if display else ""
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML"{attr}>{content}</math>'


def _chain_mathml(step) -> str:
    lhs = S.mathml(step.symbol())
    if not step.terms:
        rhs = "<mn>1</mn>" if step.kind == "backward" else "<mtext>seed direction</mtext>"
        return _math(f"<mrow>{lhs}<mo>=</mo>{rhs}</mrow>")
    parts = []
    for t in step.terms:
        if step.kind == "backward":
            c = t.consumer.name
            parts.append(S.mathml(S.Deriv("adj", step.of, c)) + S.mathml(S.Deriv("adj", c, step.node.name)))
        else:
            i = step.node.inputs[t.position].name
            parts.append(S.mathml(S.Deriv("adj", step.node.name, i)) + S.mathml(S.Deriv("tan", "", i)))
    return _math(f"<mrow>{lhs}<mo>=</mo>{'<mo>+</mo>'.join(parts)}</mrow>")


HEADING_CHARS = 90


def _heading(step) -> str:
    """Step number, node name, a definition cut at HEADING_CHARS (the whole one on hover)."""
    title = step.title()
    head, _, rest = title.partition(" = ")
    if not rest:
        return f"<h2>Step {step.index + 1}: {h(title)}</h2>"
    short = rest if len(rest) <= HEADING_CHARS else rest[:HEADING_CHARS - 1] + "…"
    return (f'<h2 title="{h(title)}">Step {step.index + 1}: {h(head)} '
            f'<span class="def">= {h(short)}</span></h2>')


def _step_section(step, hidden: bool) -> str:
    out = [f'<section class="step" data-node="n{step.node.index}" data-name="{h(step.node.name)}"'
           f'{" hidden" if hidden else ""}>',
           _heading(step),
           f'<div class="eq chain">{_chain_mathml(step)}</div>']
    if step.expr is not None:
        e = sp.factor_terms(step.expr)
        out.append(f'<div class="eq expr">{_math("<mrow><mo>=</mo>" + S.mathml(e) + "</mrow>")}</div>')
    if step.expanded is not None:
        e = sp.factor_terms(step.expanded)
        out.append(f'<div class="eq expanded">{_math("<mrow><mo>=</mo>" + S.mathml(e) + "</mrow>")}</div>')
    if step.terms:
        out.append("<p>Local derivatives:</p>")
    for t in step.terms:
        c, n = ((t.consumer.name, step.node.name) if step.kind == "backward"
                else (step.node.name, step.node.inputs[t.position].name))
        pieces = [S.mathml(S.Deriv("adj", c, n))]
        if t.local.named is not None:
            pieces.append(S.mathml(sp.factor_terms(t.local.named)))
            if t.local.explicit is not None and t.local.explicit != t.local.named:
                pieces.append(S.mathml(sp.factor_terms(t.local.explicit)))
            body = _math("<mrow>" + "<mo>=</mo>".join(pieces) + "</mrow>", display=False)
        elif t.local.mathml:
            # not a number per element (matmul, transpose, softmax...): the rule itself
            body = _math(t.local.mathml, display=False)
        else:
            body = _math("<mrow>" + pieces[0] + "<mo>:</mo></mrow>", display=False) + \
                f" <span>{h(t.local.description or '')}</span>"
        out.append(f'<div class="local">{body}</div>')
    out.append(f'<pre class="numbers">{h(step.numbers())}</pre>')
    latex = latex_lines(step)
    out.append(f'<details><summary>LaTeX</summary><pre class="latex">{h(chr(10).join(latex))}</pre></details>')
    out.append("</section>")
    return "\n".join(out)


def latex_lines(step) -> list[str]:
    """The step's equations as LaTeX, one per line (the page's LaTeX box; slides)."""
    lines = [step.chain_latex()]
    if step.expr is not None:
        lines.append("= " + S.latex(sp.factor_terms(step.expr)))
    if step.expanded is not None:
        lines.append("= " + S.latex(sp.factor_terms(step.expanded)))
    return lines + step.local_lines()


def update_rows(steps, lr: float) -> list[tuple]:
    """(param node, value, gradient, value - lr * gradient) for every parameter of the steps."""
    rows = []
    for st in steps:
        if st.kind == "backward" and st.node.op == "param" and st.derivative is not None \
                and st.value is not None:
            v = np.asarray(st.value, dtype=np.float64)
            gv = np.asarray(st.derivative, dtype=np.float64)
            rows.append((st.node, v, gv, v - lr * gv))
    return rows


def tex_array(v) -> str:
    """A value as LaTeX: a number, a bmatrix (at most 16 entries), else a labelled summary."""
    a = np.asarray(v, dtype=np.float64)
    if a.size == 1:
        return f"{float(a.reshape(-1)[0]):.4g}"
    if a.size > ev.SMALL or a.ndim > 2:
        return r"\text{%s}" % ev.summary(a).replace("_", r"\_")
    rows = a.reshape(1, -1) if a.ndim == 1 else a
    body = r" \\ ".join(" & ".join(f"{x:.4g}" for x in row) for row in rows)
    return r"\begin{bmatrix} %s \end{bmatrix}" % body


def update_latex(steps, lr: float) -> list[tuple[str, tuple]]:
    """(LaTeX `w <- w - alpha dJ/dw = numbers`, row) per parameter."""
    out = []
    for row in update_rows(steps, lr):
        p = row[0]
        name = S.symbol_latex(p.name)
        grad = S.latex(S.Deriv("adj", steps.root.name, p.name))
        out.append((rf"{name} \leftarrow {name} - \alpha\, {grad} = "
                    rf"{tex_array(row[1])} - {lr:g} \cdot {tex_array(row[2])} = "
                    rf"{tex_array(row[3])}", row))
    return out


def _update_section(steps, lr: float, index: int, hidden: bool) -> str:
    """The last step of a backprop page: one gradient-descent update of every parameter."""
    rows = update_rows(steps, lr)
    first = " ".join(f"n{r[0].index}" for r in rows)     # every parameter is highlighted
    out = [f'<section class="step update" data-node="{first}" data-name="update"'
           f'{" hidden" if hidden else ""}>',
           f"<h2>Step {index + 1}: update every parameter (gradient descent, "
           f"&alpha; = {lr:g})</h2>"]
    alpha = "<mi>&#945;</mi>"
    for p, v, gv, new in rows:
        sym = S.mathml(S.node_symbol(p.name))
        grad = S.mathml(S.Deriv("adj", steps.root.name, p.name))
        out.append(f'<div class="eq">{_math(f"<mrow>{sym}<mo>&#8592;</mo>{sym}<mo>&#8722;</mo>{alpha}{grad}</mrow>")}</div>')
        out.append(f'<pre class="numbers">{h(p.name)}: {h(ev.summary(v))} - {lr:g} x '
                   f'{h(ev.summary(gv))}\n  = {h(ev.summary(new))}</pre>')
    tex = "\n".join(t for t, _ in update_latex(steps, lr))
    out.append(f'<details><summary>LaTeX</summary><pre class="latex">{h(tex)}</pre></details>')
    out.append("</section>")
    return "\n".join(out)


def steps_fragment(steps) -> str:
    """The steps as HTML (no script): what Jupyter shows for a Steps list."""
    return "\n".join(_step_section(s, hidden=False) for s in steps)


def graph_dot(steps, max_nodes: int = 120) -> str:
    """DOT source of the graph the page shows beside the steps (values and gradients)."""
    from .draw import draw
    wrt = getattr(steps, "wrt", None) if steps.kind == "forward" else None
    return draw(steps.root, feeds=steps.feeds or None, grads=steps.kind == "backward",
                style="overlay", max_nodes=max_nodes, tangents=wrt or False).source


def _graph_svg(steps, max_nodes: int) -> str:
    from .render import svg
    text = svg(graph_dot(steps, max_nodes))
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def steps_html(steps, path, title: str | None = None, max_nodes: int = 120,
               lr: float | None = 0.1) -> str:
    """Write the self-contained stepping page for `steps` to `path`; returns the path.

    A backprop page ends with the update step w <- w - lr * dJ/dw of every parameter, with
    numbers (lr=None leaves it out). `viz.export_steps` writes the same steps as slides."""
    if not hasattr(steps, "root"):
        raise TypeError("steps_html: expected the list returned by viz.backprop_steps or "
                        "viz.forward_steps")
    kind = "Backpropagation" if steps.kind == "backward" else "Forward mode"
    title = title or f"{kind} through {steps.root.graph.name}: {steps.root.name}"
    graph = _graph_svg(steps, max_nodes)
    sections = "\n".join(_step_section(s, hidden=i > 0) for i, s in enumerate(steps))
    if lr is not None and steps.kind == "backward" and update_rows(steps, lr):
        sections += "\n" + _update_section(steps, lr, len(steps), hidden=len(steps) > 0)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)}</title>
<style>{_CSS}</style></head>
<body data-step="0">
<header><button id="prev" type="button">&larr; Previous</button>
<span id="counter">1 / {len(steps)}</span>
<button id="next" type="button">Next &rarr;</button>
<strong>{h(title)}</strong><span>(arrow keys work too)</span></header>
<main><div id="graph">{graph}</div>
<div id="steps">{sections}</div></main>
<script>{_JS}</script>
</body></html>
"""
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
