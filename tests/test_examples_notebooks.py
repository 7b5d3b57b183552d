"""The scripts in examples/ run, and the notebooks in notebooks/ execute, show a picture and
say which lecture they follow (issue 17, "Notebooks and examples").

Each notebook runs in a fresh kernel, as a student would open it; a notebook passes when no
cell raises, at least one output is a drawing or a plot (image/svg+xml or image/png), and its
first cell names the lecture and section it follows.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LECTURES = ("000", "001", "002", "003", "004")
IMAGES = ("image/png", "image/svg+xml")
# "*Follows **lecture 004** (...), section 3 "Optimizers": ...*"
STATES_LECTURE = re.compile(r"follows\s+\**lecture\s+(00[0-4])\**.*\bsections?\b", re.I | re.S)


def _first_cell(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    src = nb["cells"][0]["source"]
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip(), "an example should say what it did"


def test_examples_exist():
    assert len(EXAMPLES) >= 6, [p.name for p in EXAMPLES]
    assert {p.name for p in EXAMPLES} >= {"xor_lecture001.py", "two_moons.py"}


def test_every_lecture_has_notebooks():
    assert len(NOTEBOOKS) >= 12, [p.name for p in NOTEBOOKS]
    stated = {}
    for path in NOTEBOOKS:
        m = STATES_LECTURE.search(_first_cell(path))
        assert m, f"{path.name}: the first cell must say which lecture and section it follows"
        stated.setdefault(m.group(1), []).append(path.name)
        assert path.name.startswith(m.group(1)), \
            f"{path.name} follows lecture {m.group(1)}: its name should start with it"
    assert set(stated) == set(LECTURES), stated


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{path.name}: commit notebooks with outputs cleared"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_and_shows_a_picture(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell on error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    shown = [m for o in outputs for m in o.get("data", {}) if m in IMAGES]
    assert shown, f"{path.name}: no plot or drawing was displayed (no image/png or image/svg+xml output)"
    # a figure that fails to display shows up as its repr
    reprs = [o["data"]["text/plain"] for o in outputs
             if set(o.get("data", {})) == {"text/plain"} and "<Figure size" in o["data"]["text/plain"]]
    assert not reprs, f"{path.name}: a figure was shown as text: {reprs[0]}"


def test_demo_out_writes_drawings_step_page_and_code(tmp_path, capsys):
    """`graphnn demo --out DIR`: the drawing, the step page and the generated code, in DIR."""
    import runpy

    import numpy as np

    from graphnn.cli import XOR_X, XOR_Y, main
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert "<svg" in (out / "xor.svg").read_text(encoding="utf-8")
    assert "Next" in (out / "xor_backprop.html").read_text(encoding="utf-8")
    code = (out / "xor_step.py").read_text(encoding="utf-8")
    assert "import numpy" in code and "import graphnn" not in code
    loss, *grads = runpy.run_path(str(out / "xor_step.py"))["run"](x=XOR_X, y=XOR_Y)
    assert loss > 0 and any(np.any(gv != 0) for gv in grads)  # saved off the minimum
    assert str(out / "xor_step.py") in capsys.readouterr().out
