"""The `graphnn` command line, on the lecture-001 XOR model saved to a file."""
import ast
import subprocess
import sys

import numpy as np
import pytest

import graphnn as gn
from graphnn.cli import XOR_X, XOR_Y, main, xor_network


@pytest.fixture
def model(tmp_path):
    g, out, loss = xor_network(exact=True)
    path = tmp_path / "xor.json"
    g.save(path)
    np.savez(tmp_path / "data.npz", x=XOR_X, y=XOR_Y)
    return path


def test_demo_prints_ir_code_and_outputs(capsys, tmp_path):
    assert main(["demo", "--no-draw", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "h: f64[B,2] = relu(add_1)  # hidden" in out
    assert "def step(" in out
    assert "x = [1. 1.]  ->  0" in out and "x = [0. 1.]  ->  1" in out
    assert "rounded [0 1 1 0]" in out


def test_demo_draws(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert "<svg" in (tmp_path / "xor.svg").read_text()
    assert "Next" in (tmp_path / "xor_backprop.html").read_text()


def test_print(model, capsys):
    assert main(["print", str(model)]) == 0
    assert "out: f64[B,1] = matmul(h, w)  # output" in capsys.readouterr().out


def test_compile_writes_standalone_module(model, tmp_path):
    target = tmp_path / "xor_step.py"
    assert main(["compile", str(model), "--outputs", "out", "-o", str(target)]) == 0
    imports = {a.name.split(".")[0] for node in ast.walk(ast.parse(target.read_text()))
               if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    assert imports <= {"numpy", "math", "os"}
    code = ("import numpy as np, sys; sys.path.insert(0, sys.argv[1]); import xor_step; "
            "print(xor_step.run(x=np.array([[0,0],[0,1],[1,0],[1,1.]]))[0].ravel().tolist())")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[0.0, 1.0, 1.0, 0.0]"


def test_compile_grad(model, tmp_path):
    target = tmp_path / "grad_step.py"
    assert main(["compile", str(model), "--grad", "--loss", "loss", "-o", str(target)]) == 0
    assert "backward" in target.read_text()


def test_compile_plain_writes_one_assignment_per_node(model, tmp_path, capsys):
    lowered, plain = tmp_path / "lowered.py", tmp_path / "plain.py"
    assert main(["compile", str(model), "--outputs", "out", "-o", str(lowered)]) == 0
    assert main(["compile", str(model), "--outputs", "out", "--plain", "-o", str(plain)]) == 0
    assert "def _alloc(" in lowered.read_text()  # the default: buffers, fused code
    text = plain.read_text()
    assert "def _alloc(" not in text
    assert "    h = np.where(" in text and "# relu · f64[B,2] · hidden" in text
    assert "    out = h @ w  # matmul · f64[B,1] · output" in text


def test_draw_and_teach(model, tmp_path):
    svg = tmp_path / "m.svg"
    assert main(["draw", str(model), "--grad", "--loss", "loss", "--feeds",
                 str(tmp_path / "data.npz"), "-o", str(svg)]) == 0
    assert "<svg" in svg.read_text()
    page = tmp_path / "teach.html"
    assert main(["teach", str(model), "--loss", "loss", "-o", str(page)]) == 0
    assert "<html" in page.read_text().lower()


def test_train_saves_model(model, tmp_path, capsys):
    g, _, _ = xor_network(exact=False, seed=1)
    start = tmp_path / "start.json"
    g.save(start)
    trained = tmp_path / "trained.json"
    assert main(["train", str(start), "--data", str(tmp_path / "data.npz"), "--loss", "loss",
                 "--epochs", "50", "--batch-size", "4", "--quiet", "-o", str(trained)]) == 0
    g2 = gn.load(trained)
    assert not np.allclose(g2.values["W"], g.values["W"])
    assert "final train loss" in capsys.readouterr().out


def test_bad_model_file_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "graphnn", "version": 99}')
    assert main(["print", str(bad)]) == 2
    assert "graphnn: error:" in capsys.readouterr().err


def test_unknown_loss_name(model, capsys):
    assert main(["compile", str(model), "--grad", "--loss", "nope", "-o", "x.py"]) == 2
    assert "no node named 'nope'" in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["print", str(tmp_path / "missing.json")]) == 2
    assert "graphnn: error:" in capsys.readouterr().err
