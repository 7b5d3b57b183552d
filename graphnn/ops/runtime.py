"""Helper functions that the ops' NumPy code calls (`OpDef.helpers` names them).

The ops layer owns them: an op's NumPy code, its SymPy meaning (run on object
arrays) and the evaluator (`ops/interpret.py`) call them without the compiler.
Each helper is plain NumPy and self-contained: the printers copy the source of
the helpers a program uses into the program (`compile/printer.py`
`helper_source`), so a saved program imports numpy (and the standard library's
math) and nothing else. This module imports nothing from graphnn.
"""
import math

import numpy as np

_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(x):
    """erf to the last bit (math.erf element by element); NumPy has no erf."""
    x = np.asarray(x)
    return np.asarray(_erf_scalar(x)).astype(x.dtype if x.dtype.kind == "f" else np.float64)


erf = _erf  # the public name (viz evaluates derivative expressions with it); generated code calls `_erf`


def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, axis):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _scatter(g, like, key):
    """Zeros shaped like `like` with `g` written at `like[key]` (the VJP of indexing)."""
    out = np.zeros(np.shape(like), dtype=np.result_type(g, like))
    out[key] = g
    return out


def _conv2d_windows(x, kh, kw, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return win[:, :, ::sh, ::sw]  # (N, C, OH, OW, KH, KW)


def _conv2d(x, w, stride, padding):
    """Cross-correlation, NCHW input, OIHW weights (as torch.nn.functional.conv2d)."""
    win = _conv2d_windows(x, w.shape[2], w.shape[3], stride, padding)
    out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, OH, OW, O)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _conv2d_grad_weight(x, g, kh, kw, stride, padding):
    win = _conv2d_windows(x, kh, kw, stride, padding)
    return np.tensordot(g, win, axes=([0, 2, 3], [0, 2, 3]))  # (O, C, KH, KW)


def _conv2d_grad_input(g, w, like, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = np.shape(like)
    kh, kw = w.shape[2], w.shape[3]
    oh, ow = g.shape[2], g.shape[3]
    cols = np.tensordot(g, w, axes=([1], [0]))  # (N, OH, OW, C, KH, KW)
    out = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=np.result_type(g, w))
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += \
                cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return out[:, :, ph:ph + h, pw:pw + wd]


def _windows(x, kernel, stride, dilation):
    """Sliding windows over the trailing len(kernel) axes: (..., S) -> (..., O, K), a view."""
    k = len(kernel)
    span = tuple((n - 1) * d + 1 for n, d in zip(kernel, dilation))
    win = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(x.ndim - k, x.ndim)))
    return win[(slice(None),) * (x.ndim - k) + tuple(slice(None, None, s) for s in stride)
               + tuple(slice(None, None, d) for d in dilation)]


def _windows_adjoint(g, like, kernel, stride, dilation):
    """Every window of `g` added back where _windows took it from (col2im)."""
    shape = np.shape(like)
    k = len(kernel)
    out = np.zeros(shape, dtype=np.result_type(g))
    lead = (slice(None),) * (len(shape) - k)
    sizes = np.shape(g)[len(shape) - k:len(shape)]
    for offs in np.ndindex(*kernel):
        dst = tuple(slice(o * d, o * d + s * (m - 1) + 1, s)
                    for o, d, s, m in zip(offs, dilation, stride, sizes))
        out[lead + dst] += g[(Ellipsis,) + offs]
    return out


def _take_adjoint(g, idx, like, axis):
    """Zeros shaped like `like` with g's slices added at `idx` along `axis` (VJP of np.take)."""
    out = np.zeros(np.shape(like), dtype=np.result_type(g))
    moved = np.moveaxis(out, axis, 0)  # a view: adding into it adds into out
    idx = np.asarray(idx)
    gm = np.moveaxis(np.asarray(g), tuple(range(axis, axis + idx.ndim)), tuple(range(idx.ndim)))
    np.add.at(moved, idx, gm)
    return out


def _batch_guard(x, axis, size):
    """x unchanged, if its batch axis has the size a closed form was derived for."""
    if np.shape(x)[axis] != size:
        raise ValueError(f"this value was derived symbolically for a batch of {size}; "
                         f"got {np.shape(x)[axis]} (rebuild it with gn.grad(..., shapes=...))")
    return x


HELPERS = {
    "_batch_guard": [_batch_guard],
    "_erf": [_erf_scalar, _erf],
    "_softmax": [_softmax],
    "_log_softmax": [_log_softmax],
    "_scatter": [_scatter],
    "_conv2d": [_conv2d_windows, _conv2d],
    "_conv2d_grad_weight": [_conv2d_windows, _conv2d_grad_weight],
    "_conv2d_grad_input": [_conv2d_grad_input],
    "_windows": [_windows],
    "_windows_adjoint": [_windows_adjoint],
    "_take_adjoint": [_take_adjoint],
}
