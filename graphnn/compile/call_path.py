"""The short path of a Program's call, printed as code for one argument signature.

Once a call has passed the full feed check with nothing to convert, later calls
whose arrays have the same (type, dtype, shape) need no other check. This module
prints, for that signature, a function that gathers the arguments (from the feeds,
parameters from `graph.values`) and compares them in one expression, with no loop
and no list until the result: a few hundred nanoseconds where a loop over the
arguments cost about 2 us for xor's 7 (the whole step is 13 us). The names of
the arguments are constants of the function's namespace, never part of its text.
"""
from __future__ import annotations

from typing import Callable


def seen_args(plan: list[tuple[str, bool]], signature: list[tuple], names: frozenset
              ) -> Callable[[dict, dict], list | None]:
    """`seen(feeds, values)`: the argument list when the feeds name only arguments and
    every array matches `signature` [(type, dtype, shape)], else None. `plan` is
    [(name, is_param)] in argument order; a parameter not fed is read from `values`."""
    ns: dict = {"NAMES": names}
    lines = ["def seen(feeds, values):",
             "    if not feeds.keys() <= NAMES:",
             "        return None",
             "    get = feeds.get"]
    checks = []
    for k, ((name, is_param), (t, d, shape)) in enumerate(zip(plan, signature)):
        ns[f"N{k}"], ns[f"T{k}"], ns[f"D{k}"], ns[f"S{k}"] = name, t, d, shape
        lines.append(f"    a{k} = get(N{k})")
        if is_param:
            lines += [f"    if a{k} is None:", f"        a{k} = values.get(N{k})"]
        checks.append(f"a{k}.__class__ is not T{k} or a{k}.dtype is not D{k} or a{k}.shape != S{k}")
    if checks:  # (None and non-arrays fail the type test before their dtype is read)
        lines += [f"    if {' or '.join(checks)}:", "        return None"]
    lines.append(f"    return [{', '.join(f'a{k}' for k in range(len(plan)))}]")
    exec(compile("\n".join(lines), "<graphnn call path>", "exec"), ns)  # noqa: S102
    return ns["seen"]
