"""bench/window_stats.py: a tracker's windows against a reference, and the peers' summary."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[1] / "bench" / "window_stats.py"
_SPEC = importlib.util.spec_from_file_location("bench_window_stats", _PATH)
ws = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = ws
_SPEC.loader.exec_module(ws)


def test_gpu_j_sums_gpu_sensors_only():
    energy = {"gpu:0": 10.0, "rank1/gpu:1": 5.0, "gpu:sim": 1.0, "cpu:rapl": 7.0, "dram:model": 2}
    assert ws.gpu_j(energy) == 16.0


def test_compare_windows_and_sum_ratio():
    # reference: 100 W; the tracker says 110 W over its first window, 90 W over the second
    rows = ws.compare_windows([(0.0, 1.0, 110.0), (1.0, 3.0, 180.0)], lambda a, b: 100 * (b - a))
    assert [r["ratio"] for r in rows] == pytest.approx([1.1, 0.9])
    assert ws.sum_ratio(rows) == pytest.approx(290 / 300)
    assert ws.sum_ratio(rows, first=1) == pytest.approx(0.9)
    zero = ws.compare_windows([(5.0, 5.0, 1.0)], lambda a, b: 0.0)
    assert zero[0]["ratio"] is None and ws.sum_ratio(zero) is None


def test_error_stats_and_spread():
    stats = ws.error_stats([1.0, 1.02, 0.97, None, 1.1])
    assert stats["n"] == 4
    assert stats["median_ratio"] == pytest.approx(1.01)
    assert stats["median_abs_err_pct"] == pytest.approx(2.5)
    assert stats["p90_abs_err_pct"] == pytest.approx(3 + 0.7 * 7)  # between 3% and 10%
    assert ws.error_stats([None])["median_ratio"] is None
    assert ws.spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0,
                                                "values": [3.0, 1.0, 2.0]}  # fmt: skip
    assert ws.added_time_pct(1.0, 1.01) == pytest.approx(1.0)
    assert ws.added_time_pct(None, 1.0) is None
    assert ws.steady_epoch_s([9.0, 1.0, 3.0, 2.0]) == 2.0
    assert ws.steady_epoch_s([9.0]) is None


def _run(mode, kind, rep, epoch_s, ratios=None):
    run = {"mode": mode, "kind": kind, "rep": rep, "epoch_s": epoch_s}
    if ratios is not None:
        run["epochs"] = [{"tracker_j": r * 100.0, "reference_j": 100.0, "ratio": r} for r in ratios]
    return run


def test_summarise_runs_pairs_each_repetition_with_its_own_baseline():
    runs = [
        _run("none", "steady", 0, [2.0, 1.0, 1.0]),
        _run("ours", "steady", 0, [2.0, 1.01, 1.01], [0.8, 1.0, 1.02]),
        _run("none", "steady", 1, [2.0, 2.0, 2.0]),
        _run("ours", "steady", 1, [2.0, 2.0, 2.0], [0.9, 0.98, 1.0]),
        {"mode": "peer", "kind": "steady", "rep": 0, "error": "ImportError('peer')"},
    ]
    summary = ws.summarise_runs(runs)
    ours = summary["ours"]["steady"]
    assert ours["runs"] == 2
    assert ours["added_epoch_time_pct"]["values"] == pytest.approx([1.0, 0.0])
    assert ours["per_epoch"]["n"] == 4
    assert ours["per_epoch"]["median_ratio"] == pytest.approx(1.0)
    assert ours["first_epoch"]["ratios"] == [0.8, 0.9]
    assert ours["run_ratio"]["values"] == pytest.approx([2.82 / 3, 2.88 / 3])
    assert ours["run_ratio_from_epoch_2"]["values"] == pytest.approx([1.01, 0.99])
    assert "added_epoch_time_pct" not in summary["none"]["steady"]
    assert "per_epoch" not in summary["none"]["steady"]
    assert summary["peer"]["steady"] == {
        "runs": 0,
        "errors": ["ImportError('peer')"],
        "median_epoch_s": {"median": None, "min": None, "max": None, "values": []},
        "added_epoch_time_pct": {"median": None, "min": None, "max": None, "values": []},
    }
