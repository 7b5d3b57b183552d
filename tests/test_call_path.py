"""The public call `prog(**feeds)` checks every feed, and repeats the full check only
for argument signatures (type, dtype, shape) it has not seen pass."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn


def _prog():
    g = gn.Graph("call")
    x = g.input("x", (None, 3))
    y = g.input("y", (None,), dtype="int64")
    W = g.param("W", (3, 4), seed=0)
    loss = gn.softmax_cross_entropy(x @ W, y)
    return g, gn.compile([loss, *gn.grad(loss, [W])])


def test_a_seen_signature_takes_the_short_path_and_still_means_the_same():
    g, prog = _prog()
    X, Y = np.ones((5, 3)), np.array([0, 1, 2, 3, 0])
    assert prog._seen_args({"x": X, "y": Y}) is None  # never checked: the full path
    first = prog(x=X, y=Y)
    assert prog._last_signature is not None
    short = prog._seen_args({"x": X * 2, "y": Y})
    assert short is not None and short[0].shape == (5, 3)
    assert prog._seen_args({"x": X[:2], "y": Y[:2]}) is None  # a new batch size: full check
    assert prog._seen_args({"x": X.astype(np.float32), "y": Y}) is None
    again = prog(x=X * 2, y=Y)
    assert not np.allclose(first[0], again[0])
    np.testing.assert_allclose(again[0], gn.compile(prog.function.outputs[0])(x=X * 2, y=Y))


@pytest.mark.parametrize("bad", [
    {"x": np.ones((5, 2))},                          # another shape: full check, ShapeError
    {"x": np.ones((5, 3)) + 1j},                     # complex: refused
    {"x": np.ones((4, 3))},                          # batch sizes disagree
    {"y": np.array([0, 1, 2, 9, 0])},                # a label out of range (a value check)
    {"y": np.array([0, 1, 2, -1, 0])},
    {"x": [[1.0, 2.0, 3.0]] * 5},                    # a list: converted, then checked
])
def test_after_a_good_call_bad_feeds_are_still_refused(bad):
    g, prog = _prog()
    good = {"x": np.ones((5, 3)), "y": np.array([0, 1, 2, 3, 0])}
    prog(**good)
    feeds = dict(good, **bad)
    if isinstance(bad.get("x"), list):
        want = prog(**dict(feeds, x=np.array(bad["x"])))[0]
        np.testing.assert_allclose(prog(**feeds)[0], want)
        return
    with pytest.raises((gn.ShapeError, gn.GraphError, gn.FormatError, ValueError, TypeError)) as e:
        prog(**feeds)
    assert type(e.value).__module__.startswith("graphnn")


def test_unknown_feed_names_are_refused_after_a_good_call():
    g, prog = _prog()
    good = {"x": np.ones((5, 3)), "y": np.array([0, 1, 2, 3, 0])}
    prog(**good)
    with pytest.raises(gn.GraphError, match="unknown feed"):
        prog(**good, z=np.ones(3))


def test_threads_calling_one_fast_program_each_get_their_own_results():
    """A fast program keeps its buffers between calls, so calls from several threads
    at once would overwrite each other's intermediates: Program serializes them."""
    import threading
    g = gn.Graph("threads")
    x = g.input("x", (None, 64))
    W = g.param("W", (64, 128), seed=0)
    V = g.param("V", (128, 8), seed=1)
    out = gn.tanh(gn.relu(x @ W) @ V)
    loss = gn.sum(out * out)
    outs = [out, *gn.grad(loss, [W, V])]
    prog, plain = gn.compile(outs), gn.compile(outs, fast=False)
    assert prog.fast
    rng = np.random.default_rng(0)
    feeds = [rng.normal(size=(64, 64)) for _ in range(4)]
    want = [plain(x=X) for X in feeds]
    errors = []

    def work(k):
        for _ in range(25):
            got = prog(x=feeds[k])
            if not all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want[k])):
                errors.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
