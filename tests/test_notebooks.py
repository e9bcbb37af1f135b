"""Example notebooks run top to bottom on the bundled sample."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_notebook_runs(name, tmp_path, monkeypatch):
    # The notebooks write their runs under tempfile.mkdtemp(): TMPDIR puts them in the test's folder (pytest
    # prunes it) instead of leaving ~120 MB in /tmp per suite run.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "RANDOM WEIGHTS" in text  # offline, the notebook says it runs the untrained demo model
