"""Execute every notebook in notebooks/ (each in its own temporary working folder).

A notebook may set its budget in its metadata, ``{"carbon_callbacks": {"timeout_s": 120}}``;
the default is :data:`DEFAULT_TIMEOUT_S`. The budget bounds every cell and the whole notebook.
Kernels import this checkout's package and tests/ (``PYTHONPATH``), run offline and draw with Agg;
two run at a time (:func:`executed`).

:data:`QUICKER` makes the slowest notebooks cheaper without changing what they call: a cell
inserted after the first cell holding a marker sets fewer, smaller models, or lets nnU-Net plan
in the kernel's own process with a small fingerprint sample (``nnunet_dataset``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DEFAULT_TIMEOUT_S = 300
QUICKER = {  # notebook: (marker in a code cell, code run right after that cell)
    "model_selection": ("EPOCHS = ", "WIDTHS = [4, 8, 32]\nEPOCHS = 2"),
    "quickstart_nnunet": (
        'os.environ["nnUNet_n_proc_DA"] = "1"',
        "import contextlib\nimport nnunet_dataset\n\n"
        "contextlib.ExitStack().enter_context(nnunet_dataset.quick_planning())",
    ),
}


def _quicker(nb, stem):
    """Insert the notebook's :data:`QUICKER` cell; a marker that is gone fails the test."""
    if stem not in QUICKER:
        return
    marker, code = QUICKER[stem]
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and marker in cell.source:
            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(code))
            return
    pytest.fail(f"{stem}: no code cell holds {marker!r}; update QUICKER")


def test_there_is_a_notebook_to_run():
    assert any(p.name == "quickstart_lightning.ipynb" for p in NOTEBOOKS)


def _execute(path, work):
    """Run one notebook in a fresh kernel working in ``work``: (notebook, seconds, error)."""
    nb = nbformat.read(path, as_version=4)
    _quicker(nb, path.stem)
    budget_s = float(nb.metadata.get("carbon_callbacks", {}).get("timeout_s", DEFAULT_TIMEOUT_S))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "MPLBACKEND": "Agg",
        "CARBON_CALLBACKS_OFFLINE": "1",
    }
    client = nbclient.NotebookClient(
        nb, timeout=budget_s, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    start = time.monotonic()
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as exc:
        return nb, budget_s, time.monotonic() - start, exc
    return nb, budget_s, time.monotonic() - start, None


@pytest.fixture(scope="session")
def executed(request, tmp_path_factory):
    """The selected notebooks, run two at a time: a kernel spends most of its time importing on
    one core, so two kernels use a 2-core machine where one leaves a core idle."""
    selected = [
        item.callspec.params["path"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_notebook_runs"
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            path.stem: pool.submit(_execute, path, tmp_path_factory.mktemp(path.stem))
            for path in selected
        }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, executed):
    nb, budget_s, elapsed, error = executed[path.stem].result()
    if error is not None:
        pytest.fail(f"{path.name} failed:\n{error}")
    assert elapsed < budget_s, f"{path.name} took {elapsed:.0f} s (budget {budget_s:.0f} s)"
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
