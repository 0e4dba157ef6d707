"""The notebooks in examples/ run from top to bottom on real MNIST, so they never go stale."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_notebook(name: str, folder) -> str:
    """Run examples/``name`` from top to bottom in ``folder``; its printed output, cell by cell."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    print(f"{name} ran in {time.perf_counter() - started:.1f} s")
    return "\n".join(
        o.get("text", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


@pytest.mark.realdata
def test_the_quickstart_notebook_runs(real_env, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    outputs = run_notebook("quickstart.ipynb", tmp_path)
    assert "test accuracy: 9" in outputs  # above 90%
    assert "prediction: 7" in outputs
    agree = re.search(r"agree on ([\d.]+)% of 1000 test digits", outputs)
    assert agree and float(agree.group(1)) >= 99.8  # exact ties may fall either way
    assert (tmp_path / "quickstart.onnx").stat().st_size > 3_000_000


@pytest.mark.realdata
def test_the_backprop_notebook_checks_every_step(real_env, tmp_path):
    outputs = run_notebook("backprop.ipynb", tmp_path)
    # each number worked out by hand is the library's, printed to 10-12 digits
    pairs = re.findall(r"by hand\s+(-?[\d.]+)\s+model\.\w+\s+(-?[\d.]+)", outputs)
    assert len(pairs) == 5 and all(a == b for a, b in pairs), pairs
    errors = [float(e) for e in re.findall(r"relative error ([\d.e+-]+)", outputs)]
    assert len(errors) == 5 and max(errors) < 1e-6, errors
    before, after = map(
        float, re.search(r"the loss fell from ([\d.]+) to ([\d.]+)", outputs).groups()
    )
    assert after < before
