"""Buffer planning: give every materialized value a preallocated buffer, reusing
buffers whose values are dead (liveness over the straight-line program).

A value is dead after the last statement that reads it (reads through views,
such as `h.T`, count as reads of the viewed value). Buffers are reused only for
values of the same shape and dtype. A statement may write its result into the
buffer of an input it reads for the last time when the code it prints is
element-wise (`np.tanh(z, out=z)`); it says so through `may_alias`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Request:
    key: int                     # the value (a node id)
    shape: tuple                 # None = batch dimension
    dtype: str
    may_alias: tuple = ()        # keys whose buffer it may take over on their last read
    fixed: str | None = None     # a buffer decided elsewhere (flat views): never reused


@dataclass
class Statement:
    defines: list[Request] = field(default_factory=list)
    uses: list[int] = field(default_factory=list)


@dataclass
class Plan:
    buffer: dict[int, str]                    # value -> buffer name
    buffers: dict[str, tuple[tuple, str]]     # buffer name -> (shape, dtype)
    aliased: dict[int, int]                   # value -> the input whose buffer it took


def last_uses(statements: list[Statement], base_of: dict[int, int]) -> dict[int, int]:
    last: dict[int, int] = {}
    for i, st in enumerate(statements):
        for k in st.uses:
            last[base_of.get(k, k)] = i
    return last


def plan(statements: list[Statement], base_of: dict[int, int] | None = None,
         keep: set[int] = frozenset(), prefix: str = "_buf") -> Plan:
    """Assign buffers. `base_of` maps view values to the value they view; values in
    `keep` stay live to the end (returned or read after the straight line)."""
    base_of = base_of or {}
    last = last_uses(statements, base_of)
    free: dict[tuple, list[str]] = {}
    buffer: dict[int, str] = {}
    buffers: dict[str, tuple] = {}
    aliased: dict[int, int] = {}
    fixed_keys = set()
    for i, st in enumerate(statements):
        taken_now = set()
        for r in st.defines:
            if r.fixed is not None:
                buffer[r.key] = r.fixed
                fixed_keys.add(r.key)
                continue
            kind = (r.shape, r.dtype)
            name = None
            for a in r.may_alias:
                a = base_of.get(a, a)
                if a in buffer and a not in fixed_keys and a not in keep and last.get(a) == i \
                        and buffers.get(buffer[a]) == kind and buffer[a] not in taken_now:
                    name = buffer[a]
                    aliased[r.key] = a
                    taken_now.add(name)
                    last[a] = -1  # its buffer now belongs to r
                    break
            if name is None:
                pool = free.get(kind)
                if pool:
                    name = pool.pop()
                else:
                    name = f"{prefix}{len(buffers)}"
                    buffers[name] = kind
            buffer[r.key] = name
        # release what this statement read for the last time (and results nobody reads)
        released = set()
        for k in list(st.uses) + [r.key for r in st.defines]:
            b = base_of.get(k, k)
            if b in released or b in keep or b in fixed_keys or b not in buffer:
                continue
            if last.get(b, i) <= i and last.get(b) != -1:
                released.add(b)
                free.setdefault(buffers[buffer[b]], []).append(buffer[b])
    return Plan(buffer, buffers, aliased)
