"""Buffer planning: give every materialized value a preallocated buffer, reusing
buffers whose values are dead (liveness over the straight-line program).

The plan is safe by construction, not by special cases per op:

* A value may share memory with others without a buffer of its own: a view
  (`h.T`, a reshape, a slice) or any value whose code might return one. Each
  statement says so (`Statement.views`: value -> the values it may share memory
  with). The planner follows those links to the buffers behind a value (its
  *owners*), so a buffer stays live while any view of it can still be read, and
  a kept value (an output, a value read after the straight line) keeps every
  buffer behind it.
* A statement may write its result into the buffer of an input it reads for the
  last time when the code it prints is element-wise (`np.tanh(z, out=z)`; it
  says so through `Request.may_alias`), and only when no *other* value the
  statement reads shares that buffer: a fused statement is several calls, and a
  view read by a later call must not see an earlier call's write.

Buffers are reused only for values of the same shape and dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Request:
    key: int                     # the value (a node id)
    shape: tuple                 # None = batch dimension
    dtype: str
    may_alias: tuple = ()        # keys whose buffer it may take over on their last read
    fixed: object = None         # a buffer decided elsewhere (flat views): never reused
    fresh: bool = False          # a buffer of its own, shared with no other value (a
                                 # returned value: a target may allocate it per call)


@dataclass
class Statement:
    defines: list[Request] = field(default_factory=list)
    uses: list[int] = field(default_factory=list)
    # values this statement defines without a buffer of their own, and the values
    # whose memory they may share (a view, or code that may return one)
    views: dict[int, tuple] = field(default_factory=dict)


@dataclass
class Plan:
    buffer: dict[int, str]                    # value -> buffer name
    buffers: dict[str, tuple[tuple, str]]     # buffer name -> (shape, dtype)
    aliased: dict[int, int]                   # value -> the input whose buffer it took
    owners: dict[int, frozenset] = field(default_factory=dict)  # view -> values whose buffers it may share
    fresh: set = field(default_factory=set)   # buffers of one value each (Request.fresh)

    def shares_buffer(self, key: int) -> bool:
        """Whether `key`'s value may live in (or look into) a planned buffer."""
        return key in self.buffer or any(o in self.buffer for o in self.owners.get(key, ()))


def _owners(statements: list[Statement], base_of: dict[int, int]) -> dict[int, frozenset]:
    """Every value that may share memory with another -> the values it may look into,
    transitively (a transpose of a reshape of a buffer looks into the buffer)."""
    links: dict[int, tuple] = {k: (b,) for k, b in base_of.items()}
    for st in statements:
        links.update(st.views)
    owners: dict[int, frozenset] = {}
    for k in links:  # links point backwards in program order: iterate, never recurse
        if k in owners:
            continue
        seen, stack = set(), [k]
        while stack:
            v = stack.pop()
            for b in links.get(v, ()):
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        owners[k] = frozenset(seen)
    return owners


def last_uses(statements: list[Statement], owners: dict[int, frozenset]) -> dict[int, int]:
    """Value -> index of the last statement that reads it or any view of it."""
    last: dict[int, int] = {}
    for i, st in enumerate(statements):
        for k in st.uses:
            last[k] = i
            for o in owners.get(k, ()):
                last[o] = i
    return last


def plan(statements: list[Statement], base_of: dict[int, int] | None = None,
         keep: set[int] = frozenset(), prefix: str = "_buf") -> Plan:
    """Assign buffers. `base_of` maps view values to the value they view (the same
    as `Statement.views`); values in `keep` stay live to the end (returned or read
    after the straight line), and so does every buffer behind them."""
    owners = _owners(statements, base_of or {})
    keep = set(keep)
    for k in list(keep):
        keep |= owners.get(k, frozenset())
    last = last_uses(statements, owners)
    free: dict[tuple, list[str]] = {}
    buffer: dict[int, str] = {}
    buffers: dict[str, tuple] = {}
    aliased: dict[int, int] = {}
    fresh: set[str] = set()
    fixed_keys = set()
    for i, st in enumerate(statements):
        taken_now = set()
        # the values behind each value this statement reads: an input may be written
        # in place only when nothing else read here looks into it
        behind = {k: {k} | owners.get(k, frozenset()) for k in st.uses}
        for r in st.defines:
            if r.fixed is not None:
                buffer[r.key] = r.fixed
                fixed_keys.add(r.key)
                continue
            kind = (r.shape, r.dtype)
            name = None
            if r.fresh:  # never recycled: it is in `keep` (so never released either)
                name = f"{prefix}{len(buffers)}"
                buffers[name] = kind
                fresh.add(name)
                buffer[r.key] = name
                keep.add(r.key)
                continue
            for a in r.may_alias:
                if a in owners or a not in buffer:  # a view: its memory is not its own
                    continue
                shared = any(a in behind[k] for k in st.uses if k != a)
                if a not in fixed_keys and a not in keep and last.get(a) == i and not shared \
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
        candidates = [o for k in st.uses for o in behind[k]] + [r.key for r in st.defines]
        for b in candidates:
            if b in released or b in keep or b in fixed_keys or b not in buffer:
                continue
            if last.get(b, i) <= i and last.get(b) != -1:
                released.add(b)
                free.setdefault(buffers[buffer[b]], []).append(buffer[b])
    return Plan(buffer, buffers, aliased, owners, fresh)
