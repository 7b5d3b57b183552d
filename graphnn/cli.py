"""The `graphnn` command line: demo, print, draw, compile, teach, train.

This is the only module of graphnn that imports `viz`, and only inside the
commands that draw.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

import graphnn as gn


# -- the lecture-001 XOR network, used by the demo -----------------------------------------

def xor_network(exact: bool = True, seed: int = 0):
    """Lecture 001's 2-2-1 ReLU network; `exact` uses the lecture's solution weights."""
    g = gn.Graph("xor", seed=seed)
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    if exact:
        W = g.param("W", value=np.array([[1.0, 1.0], [1.0, 1.0]]))
        b = g.param("b", value=np.array([0.0, -1.0]))
        w = g.param("w", value=np.array([[1.0], [-2.0]]))
    else:
        W = g.param("W", (2, 2), init="he_normal")
        b = g.param("b", (2,), init="zeros")
        w = g.param("w", (2, 1), init="he_normal")
    with g.scope("hidden"):
        h = gn.relu(x @ W + b).named("h")
    with g.scope("output"):
        out = (h @ w).named("out")
    loss = gn.mse(out, y).named("loss")
    return g, out, loss


XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])
#: added to lecture 001's exact weights for the drawings: off the minimum, away from ReLU kinks
PERTURBATION = {"W": np.array([[0.1, -0.2], [0.05, 0.1]]), "b": np.array([0.05, 0.1]),
                "w": np.array([[0.1], [-0.1]])}


def _rule(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def demo(out_dir: str = "out", draw: bool = True) -> int:
    """Lecture 001's XOR: the IR, the generated code, outputs, gradients, training, drawings."""
    g, out, loss = xor_network(exact=True)
    _rule("the graph (lecture 001: XOR with W=[[1,1],[1,1]], b=[0,-1], w=[1,-2])")
    print(g)
    prog = gn.compile(out)
    _rule("generated NumPy code (one line per node; prog.source is what runs, lowered)")
    print(prog.plain_source)
    _rule("outputs on the four points")
    pred = prog(x=XOR_X)
    for xi, yi in zip(XOR_X, pred):
        print(f"  x = {xi}  ->  {yi[0]:g}")
    params = [g["W"], g["b"], g["w"]]
    grads = gn.grad(loss, params)
    step = gn.compile([loss, *grads])
    values = step(x=XOR_X, y=XOR_Y)
    _rule("loss and gradients at the exact solution (reverse mode)")
    print(f"  loss = {values[0]:g}")
    for p, gv in zip(params, values[1:]):
        print(f"  d loss / d {p.name} = {np.array2string(gv, precision=4)}")

    _rule("training from a seeded random start (Adam, lr 0.05)")
    g2, out2, loss2 = xor_network(exact=False, seed=1)
    tr = gn.Trainer(loss2, optimizer=gn.optim.Adam(lr=0.05), backend="numpy")
    hist = tr.fit({"x": XOR_X, "y": XOR_Y}, epochs=300, batch_size=4, shuffle=False, seed=0,
                  verbose=False)
    trained = tr.predict(out2, {"x": XOR_X})
    print(f"  final loss {hist.loss[-1]:.3g}; predictions "
          f"{np.array2string(trained.ravel(), precision=3)}; rounded {np.round(trained.ravel()).astype(int)}")

    # at the exact solution the loss is a minimum: every gradient is exactly zero, which
    # teaches nothing about how gradients flow; draw and step at a perturbed point
    _rule("a perturbed point, to watch gradients flow (the exact weights give all zeros)")
    for name, delta in PERTURBATION.items():
        g.values[name] = g.values[name] + delta
        print(f"  {name} = {np.array2string(g.values[name], precision=3)}")
    values = step(x=XOR_X, y=XOR_Y)
    print(f"  loss = {values[0]:.4g}")
    for p, gv in zip(params, values[1:]):
        print(f"  d loss / d {p.name} = {np.array2string(gv, precision=4)}")

    if draw:
        os.makedirs(out_dir, exist_ok=True)
        import viz  # lazily: only the drawing commands need it
        d = viz.draw(loss, grads=True, feeds={"x": XOR_X, "y": XOR_Y})
        svg_path = os.path.join(out_dir, "xor.svg")
        with open(svg_path, "w", encoding="utf-8") as f:
            f.write(viz.svg(d))
        html_path = os.path.join(out_dir, "xor_backprop.html")
        viz.steps_html(viz.backprop_steps(loss, feeds={"x": XOR_X, "y": XOR_Y}), html_path)
        code_path = os.path.join(out_dir, "xor_step.py")
        step.save(code_path)  # loss and gradients as a module that imports numpy only
        _rule("files")
        print(f"  forward + backward graph: {svg_path}")
        print(f"  step-by-step backprop page: {html_path}")
        print(f"  generated code (loss and gradients, numpy only): {code_path}")
    return 0


# -- commands on model files ------------------------------------------------------------------

def _load_feeds(path: str | None) -> dict | None:
    if not path:
        return None
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _load(path: str):
    """A graphnn model file, or an ONNX model (by its .onnx suffix)."""
    if str(path).lower().endswith(".onnx"):
        return gn.from_onnx(path)
    return gn.load(path)


def _pick_loss(g, name: str | None):
    if name:
        return g[name]
    scalars = [n for n in g.nodes if n.shape == () and not n.is_leaf]
    # a file saved with derived=True also holds gradient/update scalars: the model's loss first
    scalars = [n for n in scalars if n.role == "forward"] or scalars
    if not scalars and getattr(g, "outputs", None):  # an imported model: no loss of its own
        from .onnx_import import probe_loss
        print("graphnn: the model has no loss: differentiating half the mean square of its "
              "outputs (name one with --loss)", file=sys.stderr)
        return probe_loss(g)
    if not scalars:
        raise gn.GraphError("no scalar node in the model to differentiate; pass --loss NAME")
    return scalars[-1]


def _outputs(g, names: str | None):
    if names:
        return [g[n.strip()] for n in names.split(",") if n.strip()]
    consumed = {id(i) for n in g.nodes for i in n.inputs}
    return [n for n in g.nodes if not n.is_leaf and id(n) not in consumed]


def _random_feeds(g, batch: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for n in g.inputs:
        shape = tuple(batch if d is None else d for d in n.shape)
        feeds[n.name] = rng.normal(size=shape).astype(n.dtype) if n.dtype.kind == "f" \
            else rng.integers(0, 2, size=shape).astype(n.dtype)
    return feeds


def cmd_print(args) -> int:
    print(_load(args.model))
    return 0


def cmd_draw(args) -> int:
    import viz
    g = _load(args.model)
    feeds = _load_feeds(args.feeds)
    target = _pick_loss(g, args.loss) if args.grad else g
    depth = args.depth
    if depth is None and str(args.model).lower().endswith(".onnx"):
        depth = 0  # an imported model: one box per module (--depth N opens N levels)
    d = viz.draw(target, grads=args.grad, feeds=feeds, depth=depth)
    try:
        viz.render(d, args.output)
    except viz.RenderError as e:
        # PNG/PDF need the system Graphviz; SVG always works (embedded renderer)
        print(f"graphnn: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


def cmd_compile(args) -> int:
    g = _load(args.model)
    if args.outputs and not args.grad:
        outs = _outputs(g, args.outputs)
        what = "outputs " + ", ".join(n.name for n in outs)
    elif not args.loss and not args.grad and not any(
            n.shape == () and not n.is_leaf for n in g.nodes):
        outs = _outputs(g, None)
        what = "the graph's outputs " + ", ".join(n.name for n in outs) + " (no scalar loss)"
    else:
        # default: the loss and its gradient with respect to every parameter
        loss = _pick_loss(g, args.loss)
        params = [p for p in g.ancestors([loss]) if p.op == "param"]
        outs = [loss, *gn.grad(loss, params)] if params else [loss]
        what = (f"loss {loss.name!r} and its gradients d{loss.name}/d(" +
                ", ".join(p.name for p in params) + ")") if params else f"loss {loss.name!r}"
        if args.outputs:
            outs += [n for n in _outputs(g, args.outputs) if n not in outs]
    if args.backend == "cuda":
        return _compile_cuda(g, args, outs, what)
    prog = gn.compile(outs, backend=args.backend, fast=False if args.plain else None)
    prog.save(args.output)
    print(f"compiled {what}")
    print(f"wrote {args.output}")
    return 0


def _compile_cuda(g, args, outs, what) -> int:
    """backend cuda: a directory with model.cu, params.bin and a Makefile; the program
    trains the loss with an optimizer of gn.optim (or, with --outputs, a forward-only
    export that infers); built with nvcc when nvcc is found."""
    if args.outputs and not args.grad:
        prog = gn.compile(outs, backend="cuda")
    else:
        loss = outs[0]
        params = [p for p in g.ancestors([loss]) if p.op == "param"]
        opt = {"adam": gn.optim.Adam, "sgd": gn.optim.SGD}[args.optimizer](lr=args.lr)
        prog = gn.compile([loss], backend="cuda",
                          updates=opt.build(params, gn.grad(loss, params)) if params else None)
        what = f"a training step of loss {loss.name!r} ({args.optimizer}, lr {args.lr})"
    paths = prog.save(args.output, build=args.build)
    print(f"compiled {what}")
    for key in ("source", "params", "makefile", "executable"):
        if key in paths:
            print(f"wrote {paths[key]}")
    if "executable" not in paths:
        print("not built (nvcc or cuBLAS not found): run `make` (GPU) or `make cpu` in "
              f"{args.output}")
    return 0


def cmd_teach(args) -> int:
    import viz
    g = _load(args.model)
    loss = _pick_loss(g, args.loss)
    feeds = _load_feeds(args.feeds)
    if feeds is None:
        feeds = _random_feeds(g, batch=1)
        print("graphnn: no --feeds given: the page uses random inputs (seed 0, batch 1): "
              + ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items()), file=sys.stderr)
    viz.steps_html(viz.backprop_steps(loss, feeds=feeds), args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_train(args) -> int:
    g = gn.load(args.model)
    loss = _pick_loss(g, args.loss)
    data = _load_feeds(args.data)
    opt_cls = {"sgd": gn.optim.SGD, "adam": gn.optim.Adam, "adamw": gn.optim.AdamW,
               "rmsprop": gn.optim.RMSProp, "adagrad": gn.optim.AdaGrad}[args.optimizer]
    tr = gn.Trainer(loss, optimizer=opt_cls(lr=args.lr), backend="numpy")
    hist = tr.fit(data, epochs=args.epochs, batch_size=args.batch_size, shuffle=True,
                  seed=args.seed, verbose=not args.quiet)
    print(f"final train loss {hist.loss[-1]:.6g} after {len(hist.loss)} epochs")
    if args.output:
        g.save(args.output)      # the model with trained weights, not the training graph
        print(f"wrote {args.output}")
    if args.checkpoint:
        tr.save_checkpoint(args.checkpoint)   # optimizer state and history, to resume
        print(f"wrote {args.checkpoint}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphnn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="lecture 001's XOR: IR, generated code, gradients, training")
    d.add_argument("--out", default="out",
                   help="folder for the drawings, the step page and the generated code (default: out/)")
    d.add_argument("--no-draw", action="store_true", help="print only: write no files")

    pr = sub.add_parser("print", help="print a model file's graph")
    pr.add_argument("model")

    dr = sub.add_parser("draw", help="draw a model (SVG, or PNG/PDF with system dot)")
    dr.add_argument("model")
    dr.add_argument("--grad", action="store_true", help="add the reverse-mode graph")
    dr.add_argument("--loss", help="scalar node to differentiate (default: last scalar)")
    dr.add_argument("--feeds", help=".npz of input values (shows values and gradients)")
    dr.add_argument("--depth", type=int, default=None,
                    help="keep this many levels of scopes (modules), collapse the rest "
                         "(0: one box per module; the default for .onnx models)")
    dr.add_argument("-o", "--output", required=True)

    c = sub.add_parser("compile", help="write a standalone program")
    c.add_argument("model")
    c.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "cuda"])
    c.add_argument("--outputs", help="comma-separated node names (default: the loss and its "
                                      "parameter gradients)")
    c.add_argument("--grad", action="store_true", help="compile the loss and its parameter "
                                                       "gradients (the default without --outputs)")
    c.add_argument("--loss")
    c.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                   help="backend cuda: the optimizer of the training program")
    c.add_argument("--lr", type=float, default=1e-3, help="backend cuda: learning rate")
    c.add_argument("--plain", action="store_true",
                   help="backend numpy: write the plain program, one assignment per node "
                        "(default: the lowered program, buffers reused and element-wise code fused)")
    c.add_argument("--build", default="auto", choices=["auto", "gpu", "cpu"],
                   help="backend cuda: build with nvcc when found (auto), or the CPU build")
    c.add_argument("-o", "--output", required=True)

    t = sub.add_parser("teach", help="write a step-by-step backprop page")
    t.add_argument("model")
    t.add_argument("--loss")
    t.add_argument("--feeds", help=".npz of input values (default: random inputs, said so)")
    t.add_argument("-o", "--output", required=True)

    tr = sub.add_parser("train", help="train a model file on an .npz of arrays named like its inputs")
    tr.add_argument("model")
    tr.add_argument("--data", required=True)
    tr.add_argument("--loss")
    tr.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw", "rmsprop", "adagrad"])
    tr.add_argument("--lr", type=float, default=1e-2)
    tr.add_argument("--epochs", type=int, default=100)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--quiet", action="store_true")
    tr.add_argument("-o", "--output", help="save the trained model here (same model, trained weights)")
    tr.add_argument("--checkpoint", help="also save a checkpoint (optimizer state, history) here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args.out, draw=not args.no_draw)
        return {"print": cmd_print, "draw": cmd_draw, "compile": cmd_compile,
                "teach": cmd_teach, "train": cmd_train}[args.command](args)
    except (gn.GraphnnError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"graphnn: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
