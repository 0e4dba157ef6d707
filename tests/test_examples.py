"""The notebooks in examples/ run from top to bottom on real MNIST, so they never go stale."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["quickstart.ipynb"])
def test_the_notebook_runs(name, real_env, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("sklearn")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    seconds = time.perf_counter() - started
    outputs = "\n".join(
        o.get("text", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "test accuracy: 9" in outputs  # above 90%
    assert "prediction: 7" in outputs
    agree = re.search(r"agree on ([\d.]+)% of 1000 test digits", outputs)
    assert agree and float(agree.group(1)) >= 99.8  # exact ties may fall either way
    assert (tmp_path / "quickstart.onnx").stat().st_size > 3_000_000
    print(f"{name} ran in {seconds:.1f} s")


@pytest.mark.realdata
def test_the_backprop_notebook_checks_every_step(real_env, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / "backprop.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = "\n".join(
        o.get("text", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    # each number worked out by hand is the library's, printed to 10-12 digits
    pairs = re.findall(r"by hand\s+(-?[\d.]+)\s+model\.\w+\s+(-?[\d.]+)", outputs)
    assert len(pairs) == 5 and all(a == b for a, b in pairs), pairs
    errors = [float(e) for e in re.findall(r"relative error ([\d.e+-]+)", outputs)]
    assert len(errors) == 5 and max(errors) < 1e-6, errors
    before, after = map(
        float, re.search(r"the loss fell from ([\d.]+) to ([\d.]+)", outputs).groups()
    )
    assert after < before
