"""Committed notebooks carry no outputs, and their parameters cell is literal (what papermill and
`cxrnb reproduce` rely on: they read and replace those assignments)."""

import ast
import json
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CASES = [pytest.param(p, id=p.name) for p in NOTEBOOKS] or [
    pytest.param(None, marks=pytest.mark.skip(reason="notebooks/ has no notebooks yet"))]


@pytest.mark.parametrize("path", CASES)
def test_notebook_is_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    # nbformat 4.5 cells carry ids; a cell added by hand without one warns on every run (and nbformat
    # says it will become an error). Read as stored: nbformat.read adds missing ids itself.
    stored = json.loads(path.read_text())["cells"]
    assert all(c.get("id") for c in stored), "every cell needs an id: nbformat.validator.normalize() adds them"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook with no code cells"
    for i, cell in enumerate(code):
        assert not cell.outputs, f"code cell {i} has outputs: clear them before committing"
        assert cell.execution_count is None, f"code cell {i} has an execution count"

    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    for stmt in ast.parse(first.source).body:
        assert isinstance(stmt, (ast.Assign, ast.AnnAssign)), f"line {stmt.lineno}: only assignments"
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        assert len(targets) == 1 and isinstance(targets[0], ast.Name), f"line {stmt.lineno}: one name"
        ast.literal_eval(stmt.value)    # raises unless the value is a literal
