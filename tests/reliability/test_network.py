"""Matrix row network, through both drivers: offline (the default) never starts a live
provider and opens no socket; a live provider that fails to start, or fails in the middle of a
run (intensity or forecast), costs no energy record: the packaged annual average takes over,
warned once. The HTTP client's faults (timeouts, 429, 5xx, malformed answers) are in
test_intensity_http.py, and a live provider that never blocks training on a stalled server in
test_intensity_live.py.
"""

from __future__ import annotations

import pytest

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider
from carbon_callbacks.core.intensity.resolve import register_live_provider, unregister_live_provider
from carbon_callbacks.core.intensity.static import StaticIntensityProvider

from .harness import DRIVERS, base_settings, baseline, check_cell, train

each_driver = pytest.mark.parametrize("driver", DRIVERS)


# -- providers ----------------------------------------------------------------------------------
@pytest.fixture
def live_dk():
    """Register a live provider factory for DK (the test sets ``live_dk.factory``)."""

    class Slot:
        calls = 0
        factory = None

    def factory(zone, config, events):
        Slot.calls += 1
        return Slot.factory(zone, config, events)

    register_live_provider("DK", factory, description="test provider")
    try:
        yield Slot
    finally:
        unregister_live_provider("DK")


@each_driver
def test_offline_never_starts_a_live_provider(driver, tmp_path, live_dk, no_socket):
    live_dk.factory = lambda *a: pytest.fail("a live provider was started while offline")
    run = train(driver, base_settings(tmp_path))  # offline is the default
    log = check_cell(run, baseline(driver), warned=0)
    assert live_dk.calls == 0 and no_socket == []
    assert log.header["intensity"]["kind"] == "annual_average"


@each_driver
def test_live_provider_failing_to_start(driver, tmp_path, live_dk):
    def broken(zone, config, events):
        raise ConnectionError("DNS lookup failed")

    live_dk.factory = broken
    run = train(driver, base_settings(tmp_path, offline=False))
    log = check_cell(run, baseline(driver), warned=["could not start (DNS lookup failed)"])
    assert live_dk.calls == 1
    assert log.header["intensity"]["kind"] == "annual_average"
    assert [e["kind"] for e in log.events if e["source"] == "intensity"] == [
        "intensity_live_failed"
    ]


class FlakyProvider(IntensityProvider):
    """A live provider whose answers fail while ``failing`` is set (as after its cache ran dry)."""

    def __init__(self, zone="DK", value=99.0):
        self.zone = zone
        self.failing = False
        self.forecast_failing = False
        self.closed = False
        self.estimate = IntensityEstimate(value, zone, "test live source", kind="measured")

    def intensity_over(self, start_unix_s, end_unix_s):
        if self.failing:
            raise TimeoutError("intensity API read timed out")
        return self.estimate

    def forecast_over(self, start_unix_s, end_unix_s):
        if self.forecast_failing:
            raise ValueError("malformed forecast JSON")
        return self.estimate

    def close(self):
        self.closed = True


@each_driver
def test_live_provider_failing_mid_run_keeps_every_epoch(driver, tmp_path, live_dk):
    provider = FlakyProvider()
    live_dk.factory = lambda *a: provider

    def on_epoch_start(epoch):
        provider.failing = epoch == 1  # fails for epoch 1, answers again from epoch 2

    run = train(driver, base_settings(tmp_path, offline=False), on_epoch_start=on_epoch_start)
    log = check_cell(run, baseline(driver), warned=["intensity API read timed out"])
    assert len(run.epoch_metrics) == 3  # no epoch lost to the failure
    kinds = [rec["intensity"]["kind"] for rec in log.epochs]
    assert kinds == ["measured", "annual_average", "measured"]
    static = StaticIntensityProvider("DK").estimate.intensity_g_per_kwh
    assert run.epoch_metrics[1][keys.INTENSITY_G_PER_KWH] == static
    for rec in log.epochs:  # every epoch's CO2 from its own energy and the intensity used
        assert rec["co2_g"] == pytest.approx(
            rec["energy_kwh"] * rec["intensity"]["intensity_g_per_kwh"]
        )
    events = [e["kind"] for e in log.events if e["source"] == "intensity"]
    assert events == ["intensity_failed", "intensity_recovered"]
    assert provider.closed  # the tracker that made the provider closes it


def test_failing_forecast_keeps_the_prediction(tmp_path, live_dk):
    provider = FlakyProvider()
    provider.forecast_failing = True
    live_dk.factory = lambda *a: provider
    run = train("core", base_settings(tmp_path, offline=False))
    assert run.error is None and len(run.epoch_metrics) == 3
    assert all(keys.PRED_CO2_G in m for m in run.epoch_metrics)
    assert run.carbon_warnings == [
        "carbon_callbacks: the carbon-intensity forecast for DK failed "
        "(ValueError('malformed forecast JSON')); the prediction uses the "
        "intensity of the last epoch instead"
    ]
