"""Ops: the registry (one definition per op) and the functions that build nodes."""
from . import api
from .registry import REGISTRY, OpDef, get_op, register
from .elementwise import ELEMENTWISE, declare

__all__ = ["api", "REGISTRY", "OpDef", "get_op", "register", "ELEMENTWISE", "declare"]
