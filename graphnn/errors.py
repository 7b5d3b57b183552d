"""The three errors graphnn raises for bad input, all at graph-build time."""


class GraphnnError(Exception):
    """Base class of every error graphnn raises on purpose."""


class ShapeError(GraphnnError, ValueError):
    """Shapes or dtypes of a node's inputs do not fit its op; names node, op and shapes."""


class GraphError(GraphnnError):
    """Structural problem: nodes of two graphs, duplicate name, unknown op, cycle,
    disconnected gradient, a graph too large for symbolic mode."""


class FormatError(GraphnnError, ValueError):
    """A model file is malformed, of an unknown version, or hostile."""


class DtypeError(ShapeError, TypeError):
    """A dtype graphnn does not compute in (complex, strings, objects, ...), or a value
    that cannot be one of its dtypes. A ShapeError (and a TypeError, as it was before)."""


class DataError(GraphnnError, ValueError):
    """Training, prediction or feed data is unusable (empty, NaN/inf, not numbers, labels
    out of range, unknown or missing names); names the input."""
