"""``bench/peers_hf.py`` on the CPU (``--smoke``): the harness runs the Hugging Face Trainer
with each of our modes, reads the run log's windows and compares them with the reference.

In ``--smoke`` the GPU is a stated 100 W and the reference a made-up 100 W counter, so a
correct harness reports a ratio of 1 for every epoch; a unit slip (kWh for J), a window
taken from the wrong edges of a non-constant source, or a lost epoch would show here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def peers_hf(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import peers_hf  # noqa: PLC0415 - the bench folder is on the path only here

    yield peers_hf
    sys.modules.pop("peers_hf", None)


def test_smoke_run_measures_every_epoch_of_our_modes(peers_hf, tmp_path):
    out = tmp_path / "peers_hf.json"
    assert peers_hf.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = {r["mode"]: r for r in result["runs"]}
    assert set(runs) == set(peers_hf.MODES)
    for mode in ("codecarbon", "carbontracker", "zeus"):
        assert runs[mode]["error"] == "skipped: --smoke"
    assert "epochs" not in runs["none"] and len(runs["none"]["epoch_s"]) == 3
    for mode in ("carbon_callbacks", "carbon_callbacks_sampled"):
        epochs = runs[mode]["epochs"]
        assert len(epochs) == 3
        assert all(e["ratio"] == pytest.approx(1.0, abs=0.02) for e in epochs)
        assert runs[mode]["methods"]["gpu:sim"] == "constant"  # the stated GPU power
    summary = result["summary"]["carbon_callbacks"]["hf"]
    assert summary["runs"] == 1 and summary["run_ratio"]["median"] == pytest.approx(1.0, abs=0.02)
