"""The tracker: arithmetic against hand-computed values, run log, prediction, resume, bad input."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from power_traces import ConstantCounterSensor, TracePowerSensor

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.core.tracker import CarbonTracker

GPU_W, CPU_W = 120.0, 30.0


def _sensors():
    return [
        ConstantCounterSensor("gpu:0", GPU_W),
        TracePowerSensor("cpu:model", lambda t: CPU_W, component="cpu"),
    ]


def _tracker(tmp_path: Path, **kw) -> CarbonTracker:
    settings = {
        "epochs": 4,
        "log_dir": str(tmp_path),
        "intensity_g_per_kwh": 250.0,
        "pue": 1.5,
        "interval_s": 0.02,
        "verbose": 0,
    }
    settings.update(kw)
    return CarbonTracker(sensors=_sensors(), **settings)


def _run_epochs(tracker: CarbonTracker, n: int, seconds: float = 0.1) -> list[dict]:
    out = []
    for _ in range(n):
        tracker.epoch_start()
        time.sleep(seconds)
        out.append(tracker.epoch_end())
    return out


def test_epoch_metrics_match_hand_computed_kwh_pue_and_grams(tmp_path):
    tracker = _tracker(tmp_path)
    (m,) = _run_epochs(tracker, 1)
    tracker.stop()
    d = m[keys.EPOCH_DURATION_S]
    expected_kwh = (GPU_W + CPU_W) * d / 3.6e6 * 1.5
    assert m[keys.EPOCH_ENERGY_KWH] == pytest.approx(expected_kwh, rel=2e-3)
    assert m[keys.EPOCH_CO2_G] == pytest.approx(m[keys.EPOCH_ENERGY_KWH] * 250.0, rel=1e-12)
    assert m[keys.INTENSITY_G_PER_KWH] == 250.0
    assert m[keys.GPU_POWER_W] == pytest.approx(GPU_W, rel=2e-3)
    assert m[keys.CPU_POWER_W] == pytest.approx(CPU_W, rel=2e-3)
    assert m[keys.POWER_W] == pytest.approx(GPU_W + CPU_W, rel=2e-3)
    assert keys.DRAM_POWER_W not in m  # not measured: absent, never a silent zero


def test_cumulative_totals_and_run_log_agree(tmp_path):
    tracker = _tracker(tmp_path)
    ms = _run_epochs(tracker, 3)
    tracker.stop()
    assert ms[-1][keys.ENERGY_KWH] == pytest.approx(sum(m[keys.EPOCH_ENERGY_KWH] for m in ms))
    assert ms[-1][keys.CO2_G] == pytest.approx(sum(m[keys.EPOCH_CO2_G] for m in ms))
    log = read_run_log(tracker.log_path)
    assert log.header["pue"] == 1.5
    assert log.header["intensity"]["kind"] == "user"
    assert [s["method"] for s in log.header["sensors"]] == ["counter", "sampled"]
    assert [e["epoch"] for e in log.epochs] == [0, 1, 2]
    for rec, m in zip(log.epochs, ms, strict=True):
        assert rec["energy_kwh"] == m[keys.EPOCH_ENERGY_KWH]
        assert rec["co2_g"] == m[keys.EPOCH_CO2_G]
        assert rec["methods"] == {"gpu:0": "counter", "cpu:model": "sampled"}
        assert sum(rec["energy_j"].values()) / 3.6e6 * 1.5 == pytest.approx(rec["energy_kwh"])
    assert log.footer["status"] == "completed"
    assert log.footer["energy_kwh"] == pytest.approx(ms[-1][keys.ENERGY_KWH])
    assert log.footer["epochs_completed"] == 3
    # the whole session (gaps between epochs included) is at least the sum of the epochs
    assert log.footer["session_energy_kwh"] >= log.footer["energy_kwh"] * 0.999


def test_prediction_after_epochs_before_pred_and_keys(tmp_path, capsys):
    tracker = _tracker(tmp_path, epochs_before_pred=2, verbose=1)
    ms = _run_epochs(tracker, 3)
    tracker.stop()
    assert keys.PRED_ENERGY_KWH not in ms[0]
    assert keys.PRED_ENERGY_KWH in ms[1]
    # measured so far + remaining x per-epoch: close to 4 x the epoch cost on a flat trace
    per_epoch = ms[1][keys.EPOCH_ENERGY_KWH]
    assert ms[1][keys.PRED_ENERGY_KWH] == pytest.approx(4 * per_epoch, rel=0.15)
    out = capsys.readouterr().out
    assert "predicted consumption for 4 epoch(s) (after 2 measured)" in out
    assert "actual consumption (completed, 3 epoch(s))" in out
    assert "km travelled by car" in out
    log = read_run_log(tracker.log_path)
    assert [p["after_epochs"] for p in log.predictions] == [2, 3]


def test_phases_are_recorded_with_their_own_energy(tmp_path):
    tracker = _tracker(tmp_path)
    tracker.epoch_start()
    with tracker.phase("validation"):
        time.sleep(0.05)
    tracker.epoch_end()
    with tracker.track("inference"):
        time.sleep(0.05)
    tracker.stop()
    log = read_run_log(tracker.log_path)
    names = [(p["name"], p["in_epoch"]) for p in log.phases]
    assert names == [("validation", True), ("inference", False)]
    for p in log.phases:
        assert p["energy_kwh"] == pytest.approx(
            (GPU_W + CPU_W) * p["duration_s"] / 3.6e6 * 1.5, rel=0.05
        )


def test_monitor_epochs_stops_measuring_after_n(tmp_path):
    tracker = _tracker(tmp_path, monitor_epochs=2, epochs_before_pred=1)
    ms = _run_epochs(tracker, 4, seconds=0.02)
    tracker.stop()
    assert [bool(m) for m in ms] == [True, True, False, False]
    log = read_run_log(tracker.log_path)
    assert len(log.epochs) == 2
    assert log.footer["epochs_completed"] == 4 and log.footer["epochs_monitored"] == 2


def test_carbontracker_style_usage_and_threads_stop(tmp_path):
    tracker = CarbonTracker(
        epochs=2,
        epochs_before_pred=1,
        monitor_epochs=-1,
        log_dir=str(tmp_path),
        components="gpu",
        sim_gpu="Test GPU",
        sim_gpu_watts=200,
        sim_gpu_util=0.5,
        intensity_g_per_kwh=100,
        verbose=0,
        interval_s=0.02,
    )
    for _ in range(2):
        tracker.epoch_start()
        time.sleep(0.05)
        tracker.epoch_end()
    tracker.stop()
    log = read_run_log(tracker.log_path)
    assert [s["method"] for s in log.header["sensors"]] == ["constant"]
    assert log.epochs[0]["power_w"]["gpu"] == pytest.approx(100.0)
    assert "carbon_callbacks-meter" not in {t.name for t in threading.enumerate()}


def test_context_manager_marks_failure(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with _tracker(tmp_path) as tracker:
            tracker.epoch_start()
            raise RuntimeError("boom")
    log = read_run_log(tracker.log_path)
    assert log.footer["status"] == "failed"
    assert not tracker._meter.running


def test_sensor_failing_at_start_never_breaks_the_run(tmp_path):
    bad = TracePowerSensor("gpu:0", lambda t: 1.0, fail_after=0.0)
    tracker = CarbonTracker(
        epochs=1, sensors=[bad], log_dir=str(tmp_path), verbose=0, intensity_g_per_kwh=100
    )
    with pytest.warns(UserWarning, match="no fallback"):
        tracker.epoch_start()
        m = tracker.epoch_end()
    tracker.stop()
    assert keys.EPOCH_ENERGY_KWH not in m  # unmeasured: no key, never a silent 0
    log = read_run_log(tracker.log_path)
    assert log.epochs[0]["incomplete"] == ["gpu:0"] and log.epochs[0]["unmeasured"]
    assert [e["kind"] for e in log.events] == ["sensor_lost"]


def _resumed_run(tmp_path, state, capsys):
    """A resumed run: a tracked block outside epochs (with a nested phase), one epoch, and an
    epoch cut short by the end of the run; returns the tracker, its last metrics and printout."""
    tracker = _tracker(tmp_path, verbose=1)
    tracker.load_state_dict(state)
    with tracker.track("preprocessing"):
        with tracker.phase("inner"):  # nested: counted once, through its parent
            time.sleep(0.05)
    (m,) = _run_epochs(tracker, 1)
    tracker.epoch_start()
    time.sleep(0.05)
    capsys.readouterr()
    tracker.stop("interrupted")  # the open epoch is measured as a partial epoch
    return tracker, m, capsys.readouterr().out


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_console_run_log_report_metrics_and_checkpoint_read_one_total(
    tmp_path, capsys, old_checkpoint
):
    from carbon_callbacks.core.totals import EARLIER_SEGMENTS
    from carbon_callbacks.report.collect import collect_logs
    from carbon_callbacks.report.statement import build_report

    first = _tracker(tmp_path / "a")
    _run_epochs(first, 2)
    state = first.state_dict()
    first.stop("interrupted")
    if old_checkpoint:  # written before the per-component totals existed
        del state["energy_kwh_by_component"]
    tracker, m, printed = _resumed_run(tmp_path / "b", state, capsys)
    log = read_run_log(tracker.log_path)
    counted = {p["name"]: p["counted"] for p in log.phases}
    assert counted == {"inner": False, "preprocessing": True, "partial_epoch": True}
    run_kwh = sum(p["energy_kwh"] for p in log.phases if p["counted"]) + m[keys.EPOCH_ENERGY_KWH]
    total_kwh = state["energy_kwh"] + run_kwh
    assert tracker.totals()[keys.ENERGY_KWH] == pytest.approx(total_kwh, rel=1e-12)
    assert tracker.state_dict()["energy_kwh"] == tracker.totals()[keys.ENERGY_KWH]
    assert log.footer["energy_kwh"] == tracker.totals()[keys.ENERGY_KWH]
    assert log.footer["epochs_completed"] == 3
    by_component = log.footer["energy_kwh_by_component"]
    assert sum(by_component.values()) == pytest.approx(log.footer["energy_kwh"], rel=1e-12)
    assert (EARLIER_SEGMENTS in by_component) is old_checkpoint
    # the epoch's cumulative metric and the killed-run reading (no footer) count the same things
    assert m[keys.ENERGY_KWH] == pytest.approx(
        state["energy_kwh"] + log.phases[1]["energy_kwh"] + m[keys.EPOCH_ENERGY_KWH], rel=1e-12
    )
    footer_kwh, log.footer = log.footer["energy_kwh"], None
    assert log.totals()["energy_kwh"] == pytest.approx(total_kwh, rel=1e-12)
    # the console's total and components, and the report's row, are the footer's
    assert f"Energy: {tracker.totals()[keys.ENERGY_KWH]:.4g} kWh" in printed
    assert f"gpu {by_component['gpu']:.4g}" in printed
    (row,) = build_report(collect_logs(tracker.log_path)).rows
    assert row.energy_kwh == footer_kwh
    assert "are included in the run's totals" in row.notes and "not in" not in row.notes
    assert row.energy_kwh_gpu == by_component["gpu"] and row.energy_kwh_cpu == by_component["cpu"]


def test_a_run_of_tracked_blocks_only_has_totals(tmp_path):
    tracker = _tracker(tmp_path)
    with tracker.track("inference"):
        time.sleep(0.1)
    totals = tracker.stop()
    assert totals[keys.ENERGY_KWH] == pytest.approx((GPU_W + CPU_W) * 0.1 / 3.6e6 * 1.5, rel=0.1)


def test_a_phase_plan_that_is_not_a_plan_raises_or_with_strict_false_is_recorded(tmp_path):
    tracker = _tracker(tmp_path)
    tracker.start()
    with pytest.raises(ValueError, match="at least 1"):
        tracker.plan_phase("validation", 0)
    with pytest.warns(UserWarning, match="validation plan ignored: every_epochs must be"):
        assert tracker.plan_phase("validation", 0, source="lightning", strict=False) is None
    [event] = tracker.events.events
    assert (event.kind, event.source) == ("plan_ignored", "lightning")
    tracker.stop()
    assert [r for r in read_run_log(tracker.log_path).other if r["type"] == "plan"] == []


def test_a_plan_that_contradicts_the_settings_is_recorded_not_raised(tmp_path):
    tracker = CarbonTracker(
        sensors=_sensors(), log_dir=str(tmp_path), epochs_before_pred=3, verbose=0,
        intensity_g_per_kwh=100,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="plan"):
        tracker.set_planned(epochs=2)
    assert tracker.config.epochs is None
    assert [e.kind for e in tracker.events.events] == ["plan_not_applied"]
