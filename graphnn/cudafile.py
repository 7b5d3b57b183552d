"""Tensor files of the CUDA programs (backend 'cuda'): parameters, data, outputs.

A file is a fixed 48-byte header, then the raw tensors (C order, little-endian)
in the order the program declares them:

=======  =====  ===========================================================
offset   bytes  field
=======  =====  ===========================================================
0        8      magic ``GNTENSOR``
8        4      version (uint32, 1)
12       4      dtype of the program (uint32: 1 float32, 2 float64)
16       4      tensor count (uint32)
20       4      kind (uint32: 1 parameters, 2 data, 3 outputs)
24       16     declaration hash: the first 16 hex digits of the SHA-256 of
                the declared tensors (kind, names, dtypes, shapes)
40       8      batch size B (uint64; 0 when no tensor has a batch axis)
48       ...    the tensors, each of its declared dtype and shape (None = B)
=======  =====  ===========================================================

The program checks every field and the file's exact size before it reads a
tensor; `read` here does the same and raises `gn.FormatError`.
"""
from __future__ import annotations

import hashlib
import os
import struct

import numpy as np

from .errors import FormatError

MAGIC = b"GNTENSOR"
VERSION = 1
HEADER = 48
KINDS = {"params": 1, "data": 2, "outputs": 3}
DTYPE_CODES = {"float32": 1, "float64": 2}
MAX_BATCH = 1 << 31
_HEAD = struct.Struct("<8sIIII16sQ")


def declaration_hash(kind: str, decl) -> str:
    """16 hex digits naming a file's declaration: [(name, dtype, shape)], in order."""
    h = hashlib.sha256(f"graphnn-tensors|{kind}".encode())
    for name, dtype, shape in decl:
        dims = ",".join("B" if d is None else str(int(d)) for d in shape)
        h.update(f"|{name}:{np.dtype(dtype).name}:({dims})".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def _decl(nodes_or_decl):
    out = []
    for d in nodes_or_decl:
        if isinstance(d, tuple):
            out.append((d[0], np.dtype(d[1]).name, tuple(d[2])))
        else:
            out.append((d.name, np.dtype(d.dtype).name, tuple(d.shape)))
    return out


def write(path, kind: str, decl, arrays, dtype: str) -> None:
    """Write `arrays` (one per declared tensor, in order) as a tensor file."""
    decl = _decl(decl)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if len(arrays) != len(decl):
        raise FormatError(f"{len(arrays)} arrays for {len(decl)} declared tensors")
    batch = None
    parts = []
    for (name, dt, shape), a in zip(decl, arrays):
        a = np.asarray(a)
        if a.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, a.shape)):
            raise FormatError(f"tensor {name!r}: shape {a.shape} does not match {shape}")
        for d, s in zip(shape, a.shape):
            if d is None:
                if batch is not None and s != batch:
                    raise FormatError(f"tensor {name!r}: batch size {s} differs from {batch}")
                batch = s
        parts.append(np.ascontiguousarray(a, dtype=np.dtype(dt).newbyteorder("<")).tobytes())
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise FormatError(f"batch size {batch} is out of range (1 to {MAX_BATCH})")
    head = _HEAD.pack(MAGIC, VERSION, DTYPE_CODES[np.dtype(dtype).name], len(decl), KINDS[kind],
                      declaration_hash(kind, decl).encode(), batch or 0)
    with open(os.fspath(path), "wb") as f:
        f.write(head)
        for p in parts:
            f.write(p)


def read(path, kind: str, decl, dtype: str) -> list[np.ndarray]:
    """The arrays of a tensor file, checked against the declaration (FormatError)."""
    decl = _decl(decl)
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(HEADER)
        if len(head) < HEADER:
            raise FormatError(f"{path}: truncated header ({len(head)} bytes, a header is {HEADER})")
        magic, version, dcode, count, kcode, h, batch = _HEAD.unpack(head)
        if magic != MAGIC:
            raise FormatError(f"{path}: not a graphnn tensor file (bad magic {magic!r})")
        if version != VERSION:
            raise FormatError(f"{path}: version {version}, this graphnn reads {VERSION}")
        if dcode != DTYPE_CODES[np.dtype(dtype).name]:
            raise FormatError(f"{path}: dtype code {dcode}, expected {DTYPE_CODES[np.dtype(dtype).name]}")
        if count != len(decl):
            raise FormatError(f"{path}: {count} tensors, the program declares {len(decl)}")
        if kcode != KINDS[kind]:
            raise FormatError(f"{path}: file kind {kcode}, expected {KINDS[kind]} ({kind})")
        if h != declaration_hash(kind, decl).encode():
            raise FormatError(f"{path}: declaration hash {h!r} differs from the program's "
                              "(other names, shapes or dtypes)")
        batched = any(d is None for _, _, s in decl for d in s)
        if batched and not 1 <= batch <= MAX_BATCH or not batched and batch != 0:
            raise FormatError(f"{path}: batch size {batch} is out of range")
        shapes = [tuple(batch if d is None else d for d in s) for _, _, s in decl]
        sizes = [int(np.prod(s, dtype=np.int64)) * np.dtype(dt).itemsize
                 for (_, dt, _), s in zip(decl, shapes)]
        if HEADER + sum(sizes) != size:
            raise FormatError(f"{path}: {size} bytes, the declared tensors need "
                              f"{HEADER + sum(sizes)} (wrong sizes or truncated)")
        out = []
        for (name, dt, _), s, n in zip(decl, shapes, sizes):
            buf = f.read(n)
            out.append(np.frombuffer(buf, dtype=np.dtype(dt).newbyteorder("<")).astype(dt).reshape(s))
        return out
