"""The notebooks are what scripts/make_notebooks.py writes, stored executed, and read as an analysis
(no test cells). CI executes them again with nbmake."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_stored_notebooks_are_the_scripts() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_with_its_outputs_and_has_no_test_cells(path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not executed"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert {"image/png", "text/markdown"} <= kinds          # the figure and the per-plane tables
    text = "".join(c.source for c in code)
    assert "assert " not in text
    for step in ("medrecon.load(", "medrecon.simulate(", "medrecon.reconstruct(", "medrecon.evaluate(",
                 "save_measurement(", "comparison_figure(", "save_volume(", '"dds"'):
        assert step in text, step
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Warning" not in streams and "round trip exact: True" in streams
