"""Matrix row network, as far as the current code goes.

The live intensity providers (Energi Data Service, GB Carbon Intensity, Electricity Maps) are
issue 5's work; they register through ``register_live_provider`` and complete this row with
their own clients against :mod:`loopback` (connect timeout, read timeout, 429 with Retry-After,
500, malformed JSON, DNS failure). What exists now, and is tested here:

- the loopback fixture itself, each fault as a standard-library client sees it;
- offline (the default) never starts a live provider, and opens no socket;
- a live provider that fails to start, or fails in the middle of a run (intensity or forecast),
  costs no energy record: the packaged annual average takes over, warned once;
- a provider that polls a failing, slow server on its own thread never slows training, and its
  thread is stopped with the run.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider
from carbon_callbacks.core.intensity.resolve import register_live_provider, unregister_live_provider
from carbon_callbacks.core.intensity.static import StaticIntensityProvider

from .harness import DRIVERS, base_settings, baseline, check_cell, train
from .loopback import LoopbackServer, Reply, fail_connect, fail_dns

each_driver = pytest.mark.parametrize("driver", DRIVERS)


# -- the fixture, as a client sees it -----------------------------------------------------------
def _get(url, timeout=0.5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def test_loopback_serves_good_json_and_records_the_request():
    with LoopbackServer([Reply(json={"carbonIntensity": 123})]) as server:
        request = urllib.request.Request(server.url("/latest?zone=DK"), headers={"auth-token": "t"})
        with urllib.request.urlopen(request, timeout=2) as response:
            assert json.loads(response.read()) == {"carbonIntensity": 123}
    (seen,) = server.requests
    assert seen.path == "/latest?zone=DK" and seen.headers["auth-token"] == "t"


@pytest.mark.parametrize(
    ("reply", "error", "check"),
    [
        (Reply(delay_s=1.5), (TimeoutError, socket.timeout, urllib.error.URLError), None),
        (
            Reply(status=429, headers={"Retry-After": "7"}),
            urllib.error.HTTPError,
            lambda e: e.code == 429 and e.headers["Retry-After"] == "7",
        ),
        (Reply(status=500, body=b"oops"), urllib.error.HTTPError, lambda e: e.code == 500),
        (Reply(close_before_reply=True), (urllib.error.URLError, ConnectionError), None),
    ],
    ids=["read-timeout", "429-retry-after", "500", "closed"],
)
def test_loopback_faults_reach_the_client(reply, error, check):
    with LoopbackServer([reply]) as server:
        with pytest.raises(error) as info:
            _get(server.url())
    assert check is None or check(info.value)


def test_loopback_malformed_and_truncated_bodies():
    with LoopbackServer(
        [Reply(body=b"{not json"), Reply(json={"a": "b" * 100}, truncate_body=True)]
    ) as server:
        _, _, body = _get(server.url())
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
        with pytest.raises(Exception):  # noqa: B017 - http.client.IncompleteRead
            _get(server.url())


def test_connect_timeout_and_dns_failure_helpers(monkeypatch):
    with monkeypatch.context() as m:
        fail_connect(m)
        with pytest.raises(urllib.error.URLError) as info:
            _get("http://127.0.0.1:9/")
        assert isinstance(info.value.reason, TimeoutError)
    with monkeypatch.context() as m:
        fail_dns(m)
        with pytest.raises(urllib.error.URLError) as info:
            _get("http://intensity.example/")
        assert isinstance(info.value.reason, socket.gaierror)


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


class PollingProvider(IntensityProvider):
    """The shape a live provider must have: fetch on its own thread with a timeout, answer
    from what it holds (never blocking training), stop its thread on close()."""

    def __init__(self, url, poll_s=0.05, timeout_s=1.0):
        self.zone = "DK"
        self._fallback = StaticIntensityProvider("DK").estimate
        self._latest = None
        self.fetches = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(url, poll_s, timeout_s),
            name="carbon_callbacks-test-live",
            daemon=True,
        )
        self._thread.start()

    def _run(self, url, poll_s, timeout_s):
        while not self._stop.is_set():
            self.fetches += 1
            try:
                status, _, body = _get(url, timeout=timeout_s)
                value = float(json.loads(body)["carbonIntensity"])
                self._latest = IntensityEstimate(value, "DK", "loopback", kind="measured")
            except Exception:  # noqa: BLE001 - every fault: keep the last value
                self.failures += 1
            self._stop.wait(poll_s)

    def intensity_over(self, start_unix_s, end_unix_s):
        return self._latest or self._fallback

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)


def test_polling_a_failing_slow_server_never_slows_training(tmp_path, live_dk):
    slow = 0.5  # every answer comes after half a second, and none is usable
    faults = [
        Reply(status=429, headers={"Retry-After": "1"}, delay_s=slow),
        Reply(status=500, delay_s=slow),
        Reply(body=b"{not json", delay_s=slow),
        Reply(delay_s=3.0),  # the client gives up after 1 s
        Reply(close_before_reply=True, delay_s=slow),
    ]
    with LoopbackServer(lambda request: faults[len(server.requests) % len(faults)]) as server:
        made = []

        def factory(zone, config, events):
            made.append(PollingProvider(server.url()))
            return made[-1]

        live_dk.factory = factory
        reference = baseline("lightning")  # also imports Lightning before anything is timed
        static = train("lightning", base_settings(tmp_path / "static"), step_sleep_s=0.05)
        run = train("lightning", base_settings(tmp_path, offline=False), step_sleep_s=0.05)
    check_cell(run, reference, warned=0)
    (provider,) = made
    assert provider.failures >= 2 and provider.fetches >= provider.failures
    assert provider._latest is None  # no answer was usable: the annual average was used
    # A client on the training thread would wait >= 0.5 s per intensity lookup (one per
    # epoch, per phase and the header: 8 here), 4 s in all; polling costs nothing there.
    assert run.seconds < static.seconds + 1.5, (run.seconds, static.seconds)
    assert not provider._thread.is_alive()
