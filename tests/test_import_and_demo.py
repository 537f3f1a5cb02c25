"""`import carbon_callbacks` has no side effects; the demo (the main job) runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from carbon_callbacks.core.runlog import read_run_log

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, sys, threading
sockets = []
sys.addaudithook(lambda e, a: sockets.append(e) if e.startswith("socket.") else None)
before = set(sys.modules)
threads_before = threading.active_count()
import carbon_callbacks
from carbon_callbacks import CarbonTracker, CarbonConfig, read_run_log, best_start  # lazy names
from carbon_callbacks.core.intensity import live, location, resolve, schedule
new = set(sys.modules) - before
frameworks = sorted(m for m in new if m.split(".")[0] in
    {"torch", "lightning", "pytorch_lightning", "keras", "tensorflow", "transformers",
     "nnunetv2", "wandb", "pynvml", "requests", "matplotlib"})
print(json.dumps({"frameworks": frameworks, "sockets": sockets,
                  "threads": threading.active_count() - threads_before}))
"""


def test_import_has_no_framework_socket_nvml_or_thread():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"frameworks": [], "sockets": [], "threads": 0}


def test_demo_runs_and_reports_where_its_outputs_are(tmp_path, capsys):
    from carbon_callbacks.demo import main

    assert (
        main(["--epochs", "2", "--out", str(tmp_path), "--train-samples", "32", "--size", "32"])
        == 0
    )
    out = capsys.readouterr().out
    assert "predicted consumption for 2 epoch(s)" in out
    assert "actual consumption (completed, 2 epoch(s))" in out
    assert "TensorBoard logs:" in out and "Run log:" in out
    logs = list((tmp_path / "carbon_logs").glob("*.carbon.jsonl"))
    assert len(logs) == 1
    log = read_run_log(logs[0])
    assert log.complete and len(log.epochs) == 2
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
