"""The notebooks are kept as jupytext percent scripts paired with their .ipynb: both must hold the same
cells, and the .ipynb no outputs (CI executes them: pytest --nbmake, see pytest.ini)."""

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))
NOTEBOOKS = [p for p in NOTEBOOKS if p.name != "conftest.py"]


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_script_and_notebook_in_sync(script):
  ipynb = script.with_suffix(".ipynb")
  assert ipynb.is_file(), f"{ipynb} is missing: jupytext --to ipynb {script}"
  a, b = jupytext.read(script), jupytext.read(ipynb)
  cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]
  assert cells(a) == cells(b), f"{script.name} and {ipynb.name} differ: jupytext --sync {script}"
  assert all(not c.get("outputs") for c in b.cells if c.cell_type == "code"), f"{ipynb.name} has outputs"
  first = a.cells[0]
  assert first.cell_type == "markdown" and "colab-badge" in first.source  # what it shows, and the badge
