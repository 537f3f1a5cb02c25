"""Execute every notebook in notebooks/ (each in its own temporary working folder).

A notebook may set its budget in its metadata, ``{"carbon_callbacks": {"timeout_s": 120}}``;
the default is :data:`DEFAULT_TIMEOUT_S`. The budget bounds every cell and the whole notebook.
Kernels import this checkout's package (``PYTHONPATH``), run offline and draw with Agg.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DEFAULT_TIMEOUT_S = 300


def test_there_is_a_notebook_to_run():
    assert any(p.name == "quickstart_lightning.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    budget_s = float(nb.metadata.get("carbon_callbacks", {}).get("timeout_s", DEFAULT_TIMEOUT_S))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("CARBON_CALLBACKS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    client = nbclient.NotebookClient(
        nb,
        timeout=budget_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}")
    elapsed = time.monotonic() - start
    assert elapsed < budget_s, f"{path.name} took {elapsed:.0f} s (budget {budget_s:.0f} s)"
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
