"""The benchmark harness on the CPU: ``python -m bench``, its arithmetic and ``overhead``.

``overhead --simulate`` runs the whole GPU proof's plumbing with a stated 100 W GPU and a made-up
100 W counter, so a correct harness reports a ratio of 1 for every epoch and run; a unit slip,
windows taken from the wrong edges, a lost epoch or a variant run with the wrong package tree
would show here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ sits beside the package, not inside it
    sys.path.insert(0, str(ROOT))

from bench import stats  # noqa: E402
from bench.__main__ import SUBCOMMANDS  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402
from bench.poller import energy_at, load_steps  # noqa: E402


def test_every_subcommand_names_a_module_with_main(capsys):
    import importlib.util

    for module, _ in SUBCOMMANDS.values():
        assert importlib.util.find_spec(f"bench.{module}") is not None, module
    assert bench_main([]) == 0
    assert "overhead" in capsys.readouterr().out
    assert bench_main(["no-such"]) == 2


def test_poller_steps_interpolate_between_reads(tmp_path):
    path = tmp_path / "poll.txt"
    # the first line is the value found (not a step); then 100 W: 10 J per 0.1 s; a 3rd column
    # (read ms) is optional, and a line being written is left out
    path.write_text("9.95 5000\n10.0 5000 3.1\n10.1 15000 3.2\n10.2 25000\n10.3 3")
    times, energy = load_steps(str(path))
    assert times == [10.0, 10.1, 10.2] and energy == [5.0, 15.0, 25.0]
    assert energy_at(times, energy, 10.15) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        energy_at(times, energy, 10.5)


def test_window_arithmetic():
    energy = {"gpu:0": 10.0, "rank1/gpu:1": 5.0, "gpu:sim": 1.0, "cpu:rapl": 7.0}
    assert stats.gpu_j(energy) == 16.0
    rows = stats.compare_windows([(0.0, 1.0, 110.0), (1.0, 3.0, 180.0)], lambda a, b: 100 * (b - a))
    assert [r["ratio"] for r in rows] == pytest.approx([1.1, 0.9])
    assert stats.sum_ratio(rows) == pytest.approx(290 / 300)
    errors = stats.error_stats([1.0, 1.02, 0.97, None, 1.1])
    assert errors["n"] == 4 and errors["median_abs_err_pct"] == pytest.approx(2.5)
    assert errors["max_abs_err_pct"] == pytest.approx(10.0)
    assert stats.error_stats([None])["median_ratio"] is None


def test_summary_pairs_each_repetition_with_its_own_baseline():
    def run(mode, rep, epoch_s, ratios=None):
        out = {"mode": mode, "kind": "1s", "rep": rep, "epoch_s": epoch_s}
        if ratios is not None:
            out["epochs"] = [{"tracker_j": r * 100, "reference_j": 100, "ratio": r} for r in ratios]
        return out

    runs = [
        run("none", 0, [2.0, 1.0, 1.0]),
        run("ours", 0, [2.0, 1.01, 1.01], [0.8, 1.0, 1.02]),
        run("none", 1, [2.0, 2.0, 2.0]),
        {**run("ours", 1, [2.0, 2.0, 2.0], [0.9, 0.98, 1.0]), "run_ratio": 0.97},
    ]
    ours = stats.summarise_runs(runs)["ours"]["1s"]
    assert ours["added_epoch_time_pct"]["values"] == pytest.approx([1.0, 0.0])
    assert ours["first_epoch"]["ratios"] == [0.8, 0.9]
    assert ours["all_epochs"]["max_abs_err_pct"] == pytest.approx(20.0)
    # a run's own ratio (energy outside the epochs counted) wins over the epochs' sum
    assert ours["run_ratio"]["values"] == pytest.approx([2.82 / 3, 0.97])


@pytest.mark.timeout(300)  # eight short Python processes, one after another
def test_overhead_simulated_compares_two_trees_in_rotation(tmp_path):
    """Two package trees (the same checkout under two names), one repetition, short epochs."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench", "overhead", "--simulate", "--reps", "1"]
    cmd += ["--package", f"before={ROOT}", "--package", f"after={ROOT}", "--out", str(out)]
    cmd += ["--env", "after:CARBON_CALLBACKS_COUNTER_MODE=thread"]
    cmd += ["--lengths", "0.05,0.3", "--epochs", "3", "--idle-s", "0.1"]
    cmd += ["--sampled-lengths", "0.3", "--sampled-epochs", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("after ")  # the table comes last
    result = json.loads((out / "overhead.json").read_text())
    runs = {(r["mode"], r["kind"]): r for r in result["runs"]}
    assert not [r for r in result["runs"] if "error" in r]
    expected = {(m, k) for m in ("none", "before", "after") for k in ("0.05s", "0.3s")}
    expected |= {("before:sampled", "0.3s"), ("after:sampled", "0.3s")}  # no sampled 0.05 s
    assert set(runs) == expected
    assert "epochs" not in runs["none", "0.3s"] and len(runs["none", "0.3s"]["epoch_s"]) == 3
    for key, record in runs.items():
        if key[0] == "none":
            continue
        assert len(record["epochs"]) == 3
        assert all(e["ratio"] == pytest.approx(1.0, abs=0.03) for e in record["epochs"])
        assert record["run_ratio"] == pytest.approx(1.0, abs=0.03)
        assert record["methods"]["gpu:sim"] == "constant"
        assert Path(record["run_log"]).is_relative_to(out / "logs")
    assert result["hook_ms"]["after"]["epoch_end_ms"]["median"] > 0
    summary = result["summary"]["after"]["0.3s"]
    assert summary["added_epoch_time_pct"]["median"] is not None
    imports = result["import_summary"]
    assert set(imports) == {"before", "after"}
    assert imports["after"]["total_ms"]["median"] > 0
    assert result["meta"]["device"] == "simulated"
    # --env reaches that package's processes only
    assert runs["after", "0.3s"]["env"].get("CARBON_CALLBACKS_COUNTER_MODE") == "thread"
    assert "CARBON_CALLBACKS_COUNTER_MODE" not in runs["before", "0.3s"]["env"]
