"""Compilation: rewrite passes, then a printer per target (NumPy, CuPy, CUDA)."""
from .program import Program, compile, content_hash
from .passes import Function, PIPELINE

__all__ = ["Program", "compile", "content_hash", "Function", "PIPELINE"]
