"""The torch models of examples/onnx_models.py (one definition), for the ONNX tests."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "graphnn_example_onnx_models", Path(__file__).resolve().parents[1] / "examples" / "onnx_models.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
models, export = _mod.models, _mod.export
