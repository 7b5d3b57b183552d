"""Trainer checkpoints: one zip (npz layout) holding ``meta.json`` and one ``.npy`` per array.

Written atomically by `archive.write_files` (no temporary left behind, a stale
one from a killed process removed by the next save). Read distrustfully: every
damage -- a bad zip, an "encrypted" member, a deflate error, a `.npy` header
claiming more data than it holds, deeply nested or mistyped meta, an RNG state
out of range, a malformed early-stopping state -- is a `FormatError`, raised
before the trainer changes. No pickle.
"""
from __future__ import annotations

import io
import json
import math
import os
import warnings
import zipfile

import numpy as np

from .. import archive
from ..errors import FormatError

CHECKPOINT_FORMAT = "graphnn-checkpoint"
CHECKPOINT_VERSION = 1
MAX_META_BYTES = 64 * 2 ** 20


def save(tr, path) -> None:
    """Write the trainer's params, optimizer state, counters, RNG, history and
    early-stopping state to `path`."""
    path = os.fspath(path)
    opt = tr.optimizer
    arrays: list[tuple[str, str, np.ndarray]] = []
    values = tr.graph.values
    # (saved in the declared shape: compiled programs may hold params as flat-buffer views)
    for p in tr.params:
        arrays.append(("param", p.name, np.reshape(values[p.name], p.shape)))
    for name, node in opt.state.items():
        arrays.append(("state", name[len(opt.prefix) + 1:], np.reshape(values[name], node.shape)))
    es = tr.early_stopping
    es_state = None
    if es is not None:
        es_state = es.state_dict()
        shapes = {p.name: p.shape for p in tr.params}
        for name, arr in es.best_params.items():
            arrays.append(("best", name, np.reshape(arr, shapes[name])))
    meta = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "graph": tr.graph.name, "epoch": tr.epoch, "global_step": tr.global_step,
        "seed": tr.seed,
        "rng": None if tr._rng is None else _jsonable_rng(tr._rng),
        "optimizer": {"type": type(opt).__name__, "hyper": opt.hyper()},
        "arrays": [{"key": f"a{i}", "kind": k, "name": n} for i, (k, n, _) in enumerate(arrays)],
        "history": tr.history.to_dict(),
        "early_stopping": es_state,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        # (ensure_ascii: names with lone surrogates are valid strings, not valid UTF-8)
        zf.writestr("meta.json", json.dumps(meta, indent=1, ensure_ascii=True))
        for i, (_, _, arr) in enumerate(arrays):
            with zf.open(f"a{i}.npy", "w") as f:
                np.lib.format.write_array(f, np.array(arr, order="C"), allow_pickle=False)
    archive.write_files([(path, buf.getvalue())])


def _meta(zf, path: str) -> dict:
    data = archive.read_member(zf, "meta.json", path, limit=MAX_META_BYTES) \
        if "meta.json" in zf.namelist() else None
    if data is None:
        raise FormatError(f"{path}: missing or malformed meta.json (no such member)")
    try:
        meta = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise FormatError(f"{path}: malformed meta.json (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: missing or malformed meta.json ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{path}: not a graphnn checkpoint")
    if meta.get("version") != CHECKPOINT_VERSION or isinstance(meta.get("version"), bool):
        raise FormatError(f"{path}: checkpoint version {_show(meta.get('version'))}, this "
                          f"graphnn reads version {CHECKPOINT_VERSION}")
    return meta


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _optimizer(meta: dict, opt, path: str) -> None:
    ometa = meta.get("optimizer")
    if not isinstance(ometa, dict) or not isinstance(ometa.get("type"), str):
        raise FormatError(f"{path}: 'optimizer' must be an object with a 'type' string, "
                          f"got {_show(ometa)}")
    if ometa["type"] != type(opt).__name__:
        raise FormatError(f"{path}: checkpoint of a {_show(ometa['type'])} optimizer, this "
                          f"trainer uses {type(opt).__name__}")
    if ometa.get("hyper") != json.loads(json.dumps(opt.hyper())):
        warnings.warn(f"{path}: optimizer settings differ from the checkpoint's "
                      f"({_show(ometa.get('hyper'))} there, {opt.hyper()} here)", stacklevel=4)


def _arrays(zf, meta: dict, expected: dict, path: str) -> dict:
    entries = meta.get("arrays")
    if not isinstance(entries, list):
        raise FormatError(f"{path}: 'arrays' must be a list")
    loaded: dict[tuple[str, str], np.ndarray] = {}
    members = set(zf.namelist())
    for ent in entries:
        if not (isinstance(ent, dict) and isinstance(ent.get("key"), str)
                and isinstance(ent.get("name"), str) and ent.get("kind") in
                ("param", "state", "best")):
            raise FormatError(f"{path}: bad array entry {_show(ent)}")
        member = ent["key"] + ".npy"
        if not ent["key"].startswith("a") or not ent["key"][1:].isdigit() \
                or member not in members:
            raise FormatError(f"{path}: array entry {_show(ent['key'])} has no data")
        kind, name = ent["kind"], ent["name"]
        ref = expected.get((kind, name)) if kind != "best" else expected.get(("param", name))
        if ref is None:
            raise FormatError(f"{path}: checkpoint has {kind} {_show(name)}, which this "
                              f"trainer does not have")
        arr = archive.read_npy(zf, member, path)  # sizes checked before allocating
        if arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise FormatError(f"{path}: {kind} {_show(name)} has {arr.dtype}{list(arr.shape)} "
                              f"in the checkpoint, {ref.dtype}{list(ref.shape)} here")
        loaded[(kind, name)] = arr
    missing = sorted(f"{k} {n}" for k, n in expected if (k, n) not in loaded)
    if missing:
        raise FormatError(f"{path}: checkpoint lacks {missing}")
    return loaded


def _count(v, what: str, path: str, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise FormatError(f"{path}: {what} must be an integer >= 0"
                          f"{' or null' if allow_none else ''}, got {_show(v)}")
    return v


def _es_state(d, path: str) -> dict | None:
    """Check an early-stopping state now, not at the next fit."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise FormatError(f"{path}: early_stopping must be an object or null")
    for key in ("best", "best_epoch", "wait", "stopped_epoch"):
        if key not in d:
            raise FormatError(f"{path}: checkpoint early-stopping state is malformed: "
                              f"no {key!r}")
    best = d["best"]
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))
                             or not math.isfinite(best)):
        raise FormatError(f"{path}: early-stopping 'best' must be a finite number or null, "
                          f"got {_show(best)}")
    _count(d["best_epoch"], "early-stopping 'best_epoch'", path, allow_none=True)
    _count(d["wait"], "early-stopping 'wait'", path)
    _count(d["stopped_epoch"], "early-stopping 'stopped_epoch'", path, allow_none=True)
    return d


def load(tr, path) -> None:
    """Restore a checkpoint written by `save` for the same model; FormatError (and the
    trainer unchanged) on a bad or mismatched file."""
    from .train import History
    path = os.fspath(path)
    try:
        zf = archive.open_zip(path, "a graphnn checkpoint")
    except OSError as e:
        raise FormatError(f"{path}: not a graphnn checkpoint ({e})") from None
    with zf:
        meta = _meta(zf, path)
        opt = tr.optimizer
        _optimizer(meta, opt, path)
        expected = {("param", p.name): p for p in tr.params}
        for name, node in opt.state.items():
            expected[("state", name[len(opt.prefix) + 1:])] = node
        loaded = _arrays(zf, meta, expected, path)
        epoch = _count(meta.get("epoch"), "epoch", path)
        step = _count(meta.get("global_step"), "global_step", path)
        seed = meta.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FormatError(f"{path}: seed must be an integer or null, got {_show(seed)}")
        rng = None if meta.get("rng") is None else _rng_from_json(meta["rng"], path)
        hist = meta.get("history") or {}
        if not isinstance(hist, dict):
            raise FormatError(f"{path}: checkpoint history is malformed: not an object")
        try:
            history = History.from_dict(hist)
        except (OverflowError, RecursionError) as e:  # e.g. int(1e400), float(10**400)
            raise FormatError(f"{path}: checkpoint history is malformed: {e}") from None
        es_state = _es_state(meta.get("early_stopping"), path)
    # everything checked: now change the trainer (arrays written in place)
    values = tr.graph.values
    for (kind, name), arr in loaded.items():
        if kind != "best":
            values[expected[(kind, name)].name][...] = arr
    tr.epoch, tr.global_step, tr.seed, tr._rng = epoch, step, seed, rng
    tr.history = history
    if es_state is not None:
        best = {name: arr for (kind, name), arr in loaded.items() if kind == "best"}
        if tr.early_stopping is not None:
            tr.early_stopping.load_state(es_state, best)
        tr._es_pending = (es_state, best)
    else:
        tr._es_pending = None


def _jsonable_rng(rng: np.random.Generator) -> dict:
    state = rng.bit_generator.state
    json.dumps(state)  # PCG64's state is ints and strings: JSON-able
    return state


def _rng_from_json(state, path) -> np.random.Generator:
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise FormatError(f"{path}: rng state must be a PCG64 state object")
    inner = state.get("state")
    if not isinstance(inner, dict) or not all(
            isinstance(inner.get(k), int) and not isinstance(inner.get(k), bool)
            and 0 <= inner.get(k) < 2 ** 128 for k in ("state", "inc")):
        raise FormatError(f"{path}: malformed PCG64 state (two integers in [0, 2**128))")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise FormatError(f"{path}: bad rng state ({e})") from None
    return rng
