"""bench/record_hf_trace.py on the CPU: a real Trainer run becomes a trace with its plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_a_recorded_trace_carries_the_step_plan_the_predictor_then_uses(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import predict_accuracy as accuracy  # noqa: PLC0415 - the bench folder is on the path only here
    import record_hf_trace as record  # noqa: PLC0415

    path = record.record("micro", "test", tmp_path, note="test")
    trace = json.loads(path.read_text())
    assert trace["planned"]["epochs"] == 4 and trace["planned"]["total_steps"] == 16
    (plan,) = trace["planned"]["phases"]
    assert (plan["name"], plan["every_steps"], plan["at_last_step"]) == ("evaluation", 3, True)
    assert plan["work_ratio"] == pytest.approx(1 / 4)  # 8 samples in 1 batch; 4 training batches
    # evaluations after steps 3 (epoch 0), 6 (1), 9 (2), 12 (2), 15 and 16 (3)
    assert [len(e["phases"]) for e in trace["epochs"]] == [1, 1, 2, 2]
    assert [e["steps"] for e in trace["epochs"]] == [4, 4, 4, 4]
    rows = accuracy.evaluate(trace, [2])  # 8 steps done: 9, 12, 15 and the last (16) to come
    assert "evaluation: every 3 steps (planned), 4 to come x level of" in rows[0]["method"]
    assert trace["recorded_with"]["command"].endswith("--size micro --suffix test")
