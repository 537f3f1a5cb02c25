"""Matrix row RAPL: absent, permission denied (at start and revoked mid-run), wraparound inside
one epoch, a domain vanishing. A simulated powercap tree (``hardware.SimulatedRapl``) serves
counters that run at fixed watts, so every joule can be checked."""

from __future__ import annotations

import time

import pytest

from carbon_callbacks.core.tracker import CarbonTracker

from .hardware import SimulatedRapl, joules_match
from .harness import DRIVERS, assert_switched, base_settings, baseline, check_cell, train

each_driver = pytest.mark.parametrize("driver", DRIVERS)

PACKAGE_W, DRAM_W = 60.0, 6.0


def _cpu_settings(tmp_path, sim: SimulatedRapl | None = None, **kw):
    root = sim.root if sim is not None else tmp_path / "absent"
    return base_settings(tmp_path, components="cpu", _endpoints={"rapl_root": str(root)}, **kw)


def _joules_match(rec, sensor, watts):
    assert joules_match(rec["energy_j"][sensor], watts, rec["duration_s"]), (rec, watts)


@each_driver
def test_absent_uses_the_models_and_records_why(driver, tmp_path):
    run = train(driver, _cpu_settings(tmp_path))
    log = check_cell(run, baseline(driver), warned=0)  # normal off Linux / in VMs: recorded
    assert [s["method"] for s in log.header["sensors"]] == ["modelled", "modelled"]
    (event,) = log.events
    assert event["kind"] == "sensor_fallback" and "absent" in event["message"]
    assert all(m["carbon/cpu_power_w"] >= 0 for m in run.epoch_metrics)  # present: modelled
    assert [rec["methods"]["cpu:model"] for rec in log.epochs] == ["modelled"] * 3


@each_driver
def test_counters_measure_package_and_dram(driver, tmp_path, monkeypatch):
    sim = SimulatedRapl(tmp_path / "powercap", package_w=PACKAGE_W, dram_w=DRAM_W)
    sim.install(monkeypatch)
    run = train(driver, _cpu_settings(tmp_path, sim), step_sleep_s=0.02)
    log = check_cell(run, baseline(driver), warned=0)
    assert [s["method"] for s in log.header["sensors"]] == ["counter", "counter"]
    for rec in log.epochs:
        _joules_match(rec, "cpu:package-0", PACKAGE_W)
        _joules_match(rec, "dram:package-0", DRAM_W)


@each_driver
def test_permission_denied_at_start(driver, tmp_path, monkeypatch):
    sim = SimulatedRapl(tmp_path / "powercap").install(monkeypatch)
    sim.deny(sim.package, sim.dram)
    run = train(driver, _cpu_settings(tmp_path, sim))
    log = check_cell(run, baseline(driver), warned=["sudo chmod a+r"])
    assert [s["method"] for s in log.header["sensors"]] == ["modelled", "modelled"]
    assert [e["kind"] for e in log.events] == ["sensor_fallback"]
    assert "permission denied" in log.events[0]["message"]


@each_driver
def test_permission_revoked_mid_run(driver, tmp_path, monkeypatch):
    sim = SimulatedRapl(tmp_path / "powercap", package_w=PACKAGE_W).install(monkeypatch)

    def fault(epoch, batch):
        if (epoch, batch) == (1, 0):
            sim.deny(sim.package)

    run = train(driver, _cpu_settings(tmp_path, sim), step_hook=fault, step_sleep_s=0.02)
    log = check_cell(run, baseline(driver), warned=["cpu:package-0 (RAPL intel-rapl:0"])
    assert_switched([rec["methods"]["cpu:package-0"] for rec in log.epochs], "counter", "modelled")
    assert [rec["methods"]["dram:package-0"] for rec in log.epochs] == ["counter"] * 3
    _joules_match(log.epochs[0], "cpu:package-0", PACKAGE_W)
    assert [e["kind"] for e in log.events] == ["sensor_fallback"]


@each_driver
def test_wraparound_inside_one_epoch(driver, tmp_path, monkeypatch):
    # 100 W on a 20 J counter range: the counter wraps every 0.2 s, several times an epoch
    sim = SimulatedRapl(tmp_path / "powercap", package_w=100.0, max_range_uj=20_000_000)
    sim.install(monkeypatch)
    run = train(driver, _cpu_settings(tmp_path, sim), step_sleep_s=0.12)
    log = check_cell(run, baseline(driver), warned=0)
    for rec in log.epochs:
        _joules_match(rec, "cpu:package-0", 100.0)
        # more than one whole counter range inside the epoch: it wrapped at least once
        assert rec["energy_j"]["cpu:package-0"] > 20.0


@each_driver
def test_domain_vanishing(driver, tmp_path, monkeypatch):
    sim = SimulatedRapl(tmp_path / "powercap", package_w=PACKAGE_W, dram_w=DRAM_W)
    sim.install(monkeypatch)

    def fault(epoch, batch):
        if (epoch, batch) == (1, 0):
            sim.remove(sim.dram)

    run = train(driver, _cpu_settings(tmp_path, sim), step_hook=fault, step_sleep_s=0.02)
    log = check_cell(run, baseline(driver), warned=["vanished"])
    assert_switched([rec["methods"]["dram:package-0"] for rec in log.epochs], "counter", "modelled")
    for rec in log.epochs:  # the package counter is untouched
        _joules_match(rec, "cpu:package-0", PACKAGE_W)
    _joules_match(log.epochs[0], "dram:package-0", DRAM_W)
    assert [e["kind"] for e in log.events] == ["sensor_fallback"]


def test_first_interval_is_measured_not_dated_later(tmp_path, monkeypatch):
    """Epochs that end before the meter's second counter read (default interval 1 s) still get
    their own joules: before, a mark with no power estimate yet read as 0 J (a silent zero) and
    the energy landed in a later epoch."""
    sim = SimulatedRapl(tmp_path / "powercap", package_w=PACKAGE_W).install(monkeypatch)
    tracker = CarbonTracker(epochs=4, **_cpu_settings(tmp_path, sim, interval_s=1.0, log_dir=None))
    tracker.start()
    measured = []
    for _ in range(4):
        tracker.epoch_start()
        time.sleep(0.03)
        tracker.epoch_end()
        measured.append(tracker.last_measurement)
    tracker.stop()
    for m in measured:  # all four epochs lie inside the first second
        assert joules_match(m.energy_j["cpu:package-0"], PACKAGE_W, m.duration_s)
        assert m.energy_j["cpu:package-0"] > 0.5 * PACKAGE_W * m.duration_s
