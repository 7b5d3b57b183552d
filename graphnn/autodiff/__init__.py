"""Differentiation, graph to graph: reverse (VJP), forward (JVP), symbolic (SymPy)."""
