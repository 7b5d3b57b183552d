"""The Python blocks of README.md run, in order, as one session."""
import re
from pathlib import Path

import matplotlib

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_code_runs(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    ns: dict = {}
    for k, block in enumerate(blocks):
        exec(compile(block, f"README.md block {k + 1}", "exec"), ns)  # noqa: S102
    assert ns["out_v"].ravel().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert (tmp_path / "backprop.html").exists() and (tmp_path / "mlp.ckpt").exists()
