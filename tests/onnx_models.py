"""The torch models of examples/onnx_models.py (one definition), for the ONNX tests."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "graphnn_example_onnx_models", Path(__file__).resolve().parents[1] / "examples" / "onnx_models.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
models, export = _mod.models, _mod.export

_EXPORTED: dict = {}


def exported(tmp_path_factory, seed: int = 0) -> dict:
    """name -> (module, example input, path of its .onnx), exported once per session."""
    if seed not in _EXPORTED:
        d = tmp_path_factory.mktemp(f"onnx{seed}")
        out = {}
        for name, (module, x, dynamic) in models(seed).items():
            path = d / f"{name}.onnx"
            export(module, x, path, dynamic)
            out[name] = (module, x, path)
        _EXPORTED[seed] = out
    return _EXPORTED[seed]
