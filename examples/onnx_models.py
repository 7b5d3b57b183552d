"""Real models in: three torch modules exported with torch.onnx.export, imported with
gn.from_onnx, checked against torch, and drawn with their gradient flow, one box per
module (`graphnn draw MODEL.onnx --grad -o MODEL.svg`; `--depth 1` opens one level).

    python examples/onnx_models.py [OUT_DIR]      (default: out/onnx)

Needs torch, onnx and onnxscript (the `test` extra). The models: an MLP, a LeNet-style
CNN with batch norm and pooling, a transformer encoder layer. tests/test_onnx_torch.py
tests these same models.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        return torch.log_softmax(self.fc2(torch.tanh(self.fc1(x))), dim=-1)


class LeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.fc = torch.nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.nn.functional.avg_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def encoder_layer():
    layer = torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0,
                                             batch_first=True)
    with torch.no_grad():  # distinct values: the exporter shares equal initializers
        for p in (layer.norm1.weight, layer.norm1.bias, layer.norm2.weight, layer.norm2.bias):
            p.add_(torch.randn_like(p) * 0.1)
    return layer


def models(seed: int = 0):
    """name -> (module in eval mode, example input, dynamic batch?), in float32 whatever
    torch's default dtype is."""
    torch.manual_seed(seed)
    f32 = torch.float32
    lenet = LeNet().to(f32)
    with torch.no_grad():  # non-trivial batch-norm statistics
        lenet.bn1.running_mean.uniform_(-0.5, 0.5)
        lenet.bn1.running_var.uniform_(0.5, 2.0)
    return {
        "mlp": (MLP().to(f32).eval(), torch.randn(3, 4, dtype=f32), True),
        "lenet": (lenet.eval(), torch.randn(3, 1, 12, 12, dtype=f32), True),
        # multi-head attention reshapes (batch * heads): a fixed batch size
        "encoder": (encoder_layer().to(f32).eval(), torch.randn(2, 5, 8, dtype=f32), False),
    }


def export(module, x, path, dynamic: bool) -> None:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}} if dynamic else None,
                          external_data=False, optimize=False, verbose=False)


def main(out_dir: str = os.path.join("out", "onnx")) -> int:
    import graphnn as gn
    from graphnn.cli import main as graphnn_cli
    os.makedirs(out_dir, exist_ok=True)
    for name, (module, x, dynamic) in models().items():
        path = os.path.join(out_dir, f"{name}.onnx")
        export(module, x, path, dynamic)
        g = gn.from_onnx(path)
        got, = gn.compile(g.outputs)(x=x.numpy())
        err = float(np.max(np.abs(got - module(x).detach().numpy())))
        print(f"{name}: {len(g.nodes)} graphnn nodes, {len(g.params)} params, "
              f"max |graphnn - torch| = {err:.2g}")
        svg = os.path.join(out_dir, f"{name}.svg")
        if graphnn_cli(["draw", path, "--grad", "-o", svg]) != 0:  # one box per module
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
