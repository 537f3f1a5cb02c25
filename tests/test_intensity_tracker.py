"""Live intensity inside a tracked run: per-epoch time-weighting, forecasts in the prediction,
training never waits for the network, offline opens no socket, the token never leaks."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from pathlib import Path

import pytest
from fake_intensity_api import FakeApi, Response, eds_handler, eds_records
from power_traces import ConstantCounterSensor

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.config import ConfigError
from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.intensity.http import HttpClient
from carbon_callbacks.core.intensity.live import FetchResult, LiveIntensityProvider, LiveSource
from carbon_callbacks.core.intensity.location import clear_ip_cache
from carbon_callbacks.core.intensity.schedule import ScheduleError, best_start
from carbon_callbacks.core.intensity.static import StaticIntensityProvider, zone_value
from carbon_callbacks.core.intensity.timeline import IntensityPoint
from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.core.tracker import CarbonTracker

pytestmark = [
    pytest.mark.usefixtures("loopback_only"),
    pytest.mark.filterwarnings("ignore::carbon_callbacks.core.events.CarbonCallbacksWarning"),
]
TOKEN = "em-secret-token-4f9a2b7c"
GPU_W = 200.0


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "CARBON_CALLBACKS_OFFLINE",
        "CARBON_CALLBACKS_ZONE",
        "CARBON_CALLBACKS_INTENSITY_G_PER_KWH",
        "CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "GOOGLE_CLOUD_REGION",
        "CLOUD_RUN_REGION",
        "FUNCTION_REGION",
        "REGION_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    clear_ip_cache()


def tracker(tmp_path: Path, **kw) -> CarbonTracker:
    settings = {"epochs": 3, "log_dir": str(tmp_path), "interval_s": 0.02, "verbose": 0}
    settings.update(kw)
    return CarbonTracker(sensors=[ConstantCounterSensor("gpu:0", GPU_W)], **settings)


class TimedSource(LiveSource):
    """Points laid out relative to the moment the source is built (in-memory, no network)."""

    name = "test"
    zone = "DK1"
    description = "timed test source"
    basis = "direct"
    refresh_s = 3600.0
    has_forecast = True

    def __init__(self, spans, resolution_s=300.0):
        self.t0 = time.time()
        self.spans = spans  # (from_s, to_s, value, kind) relative to t0
        self.resolution_s = resolution_s

    def fetch(self, client, now_unix_s):
        return FetchResult(
            [
                IntensityPoint(self.t0 + a, self.t0 + b, v, k, f"test {k}", "direct")
                for a, b, v, k in self.spans
            ]
        )


def live(source: LiveSource) -> LiveIntensityProvider:
    p = LiveIntensityProvider(
        source, StaticIntensityProvider("DK"), EventLog(), client=HttpClient()
    )
    assert p.wait_ready(5.0)
    return p


def run_epochs(t: CarbonTracker, n: int, seconds: float) -> list[dict]:
    out = []
    for _ in range(n):
        t.epoch_start()
        time.sleep(seconds)
        out.append(t.epoch_end())
    return out


def test_epoch_co2_is_time_weighted_over_its_own_span(tmp_path):
    source = TimedSource([(-3600, 0.15, 100.0, "measured"), (0.15, 3600, 300.0, "measured")])
    provider = live(source)
    t = tracker(tmp_path, intensity=provider)
    (m,) = run_epochs(t, 1, 0.3)
    t.stop()
    provider.close()
    (rec,) = read_run_log(t.log_path).epochs
    a, b, change = rec["start_unix_s"], rec["end_unix_s"], source.t0 + 0.15
    assert a < change < b  # the value changed inside the epoch
    weighted = ((change - a) * 100.0 + (b - change) * 300.0) / (b - a)
    assert rec["intensity"]["intensity_g_per_kwh"] == pytest.approx(weighted, rel=1e-9)
    assert rec["co2_g"] == pytest.approx(rec["energy_kwh"] * weighted, rel=1e-9)
    assert m[keys.EPOCH_CO2_G] == rec["co2_g"]
    assert m[keys.INTENSITY_G_PER_KWH] == pytest.approx(weighted, rel=1e-9)
    segs = rec["intensity"]["segments"]
    assert [(s["intensity_g_per_kwh"], s["kind"]) for s in segs] == [
        (100.0, "measured"),
        (300.0, "measured"),
    ]
    assert segs[0]["start_unix_s"] == a and segs[1]["end_unix_s"] == b
    assert segs[0]["end_unix_s"] == pytest.approx(change)
    assert segs[0]["source"] == "test measured"


def test_prediction_applies_the_forecast_over_the_predicted_span(tmp_path):
    source = TimedSource([(-3600, 0.05, 100.0, "measured"), (0.05, 3600, 300.0, "forecast")])
    provider = live(source)
    t = tracker(tmp_path, intensity=provider, epochs=4, epochs_before_pred=1)
    time.sleep(0.06)  # start after the forecast begins
    run_epochs(t, 1, 0.1)
    t.stop()
    provider.close()
    log = read_run_log(t.log_path)
    (pred,) = log.predictions
    assert pred["intensity"]["kind"] == "forecast"
    assert pred["intensity"]["intensity_g_per_kwh"] == pytest.approx(300.0)
    done = log.epochs[0]
    assert pred["co2_g"] == pytest.approx(
        done["co2_g"] + (pred["energy_kwh"] - done["energy_kwh"]) * 300.0, rel=1e-9
    )
    span = pred["intensity"]["end_unix_s"] - pred["intensity"]["start_unix_s"]
    assert span == pytest.approx(pred["duration_s"] - done["duration_s"], rel=1e-6)


def test_forecast_shorter_than_the_run_continues_on_the_annual_average_labelled(tmp_path):
    source = TimedSource(
        [(-3600, 0.0, 100.0, "measured"), (0.0, 0.3, 300.0, "forecast")], resolution_s=0.05
    )
    provider = live(source)
    provider.events = t_events = EventLog()
    t = tracker(tmp_path, intensity=provider, epochs=30, epochs_before_pred=1)
    metrics = run_epochs(t, 1, 0.05)
    t.stop()
    provider.close()
    (pred,) = read_run_log(t.log_path).predictions
    intensity = pred["intensity"]
    assert intensity["kind"] == "mixed"
    assert intensity["segments"][-1]["note"].startswith("beyond the forecast horizon")
    assert intensity["segments"][-1]["intensity_g_per_kwh"] == zone_value("DK").intensity_g_per_kwh
    assert 100.0 < intensity["intensity_g_per_kwh"] < 300.0
    assert [e.kind for e in t_events.events] == ["intensity_forecast_short"]
    assert keys.PRED_CO2_G in metrics[0]


def test_live_energidataservice_run_records_values_sources_and_times(tmp_path):
    now = time.time()
    t0 = now - now % 300
    api = FakeApi()
    api.route(
        r"^/dataset/",
        eds_handler(
            {
                "CO2Emis": eds_records(t0 - 1200, [150, 140, 130, 120, 110]),
                "CO2EmisProg": eds_records(t0 + 300, [90, 80, 70]),
            }
        ),
    )
    try:
        t = tracker(
            tmp_path,
            zone="DK1",
            live_intensity=True,
            _endpoints={"energidataservice_base_url": api.url},
        ).start()  # the live source starts with the tracker
        assert isinstance(t.intensity, LiveIntensityProvider)
        assert t.intensity.wait_ready(5.0)
        run_epochs(t, 2, 0.05)
        t.stop()
    finally:
        api.close()
    assert not t.intensity.running  # stop() closed the provider it created
    log = read_run_log(t.log_path)
    assert log.header["config"]["live_intensity"] is True
    assert log.header["config"]["offline"] is False
    for rec in log.epochs:
        intensity = rec["intensity"]
        slot_value = 110.0 if rec["end_unix_s"] < t0 + 300 else None
        assert intensity["zone"] == "DK1"
        assert intensity["basis"] == "direct"
        assert "Energi Data Service" in intensity["source"]
        if slot_value is not None:
            assert intensity["intensity_g_per_kwh"] == slot_value
            assert intensity["kind"] == "measured"
        assert rec["co2_g"] == pytest.approx(rec["energy_kwh"] * intensity["intensity_g_per_kwh"])
        for seg in intensity["segments"]:
            assert seg["start_unix_s"] >= rec["start_unix_s"] - 1e-9
            assert seg["value_start_unix_s"] is not None
    kinds = [e["kind"] for e in log.events]
    assert "intensity_live_started" in kinds


def test_training_never_waits_for_a_stalled_provider(tmp_path):
    api = FakeApi()
    api.route(r"^/dataset/", Response(stall=True))
    try:
        t = tracker(
            tmp_path,
            zone="DK1",
            live_intensity=True,
            _endpoints={"energidataservice_base_url": api.url},
        ).start()
        deadline = time.monotonic() + 3
        while not api.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api.requests  # the refresh thread is blocked on the server now
        durations = []
        for _ in range(3):
            t.epoch_start()
            time.sleep(0.02)
            t0 = time.perf_counter()
            m = t.epoch_end()
            durations.append(time.perf_counter() - t0)
        assert max(durations) < 0.1
        assert m[keys.INTENSITY_G_PER_KWH] == zone_value("DK").intensity_g_per_kwh
        t0 = time.perf_counter()
        t.stop()
        assert time.perf_counter() - t0 < 1.5
        rec = read_run_log(t.log_path).epochs[-1]
        assert rec["intensity"]["kind"] == "annual_average"
        assert rec["intensity"]["segments"][0]["note"] == "no live value yet"
    finally:
        api.close()
    t.intensity._thread.join(5.0)
    assert not t.intensity.running


class SocketGuard:
    """Replaces socket creation with a function that records the attempt and refuses it."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in ("socket", "create_connection", "getaddrinfo", "socketpair"):
            monkeypatch.setattr(socket, name, self._refuse(name))

    def _refuse(self, name):
        def refuse(*args, **kwargs):
            self.calls.append(name)
            raise OSError(f"socket.{name} called while offline")

        return refuse


LIVE_SETTINGS = {
    "zone": "DK1",
    "live_intensity": True,
    "electricitymaps_token": TOKEN,
    "ip_geolocation": True,
    "_endpoints": {"energidataservice_base_url": "https://api.energidataservice.dk"},
}


def _life_cycle(t: CarbonTracker) -> None:
    t.start()
    for epoch in range(2):
        t.epoch_start()
        with t.phase("validation"):
            time.sleep(0.01)
        t.epoch_end(steps=5)
        t.record_metric("dice", 0.8, epoch)
    with t.track("inference"):
        time.sleep(0.01)
    t.stop()


@pytest.mark.parametrize("how", ["setting", "environment"])
def test_offline_opens_no_socket_anywhere(tmp_path, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("CARBON_CALLBACKS_OFFLINE", "1")
        settings = dict(LIVE_SETTINGS)
    else:
        settings = {**LIVE_SETTINGS, "offline": True}
    guard = SocketGuard(monkeypatch)
    t = tracker(tmp_path, **settings)
    _life_cycle(t)
    with pytest.raises(ScheduleError, match="network is off"):
        best_start("DK1", 3600, **({"offline": True} if how == "setting" else {}))
    # no location setting given: cloud region absent, IP lookup opted in but offline
    t2 = tracker(tmp_path, **{**settings, "zone": None})
    _life_cycle(t2)
    assert guard.calls == []
    monkeypatch.undo()
    log = read_run_log(t.log_path)
    assert log.header["intensity"]["kind"] == "annual_average"
    assert log.header["intensity"]["zone"] == "DK"
    assert log.header["config"]["offline"] is True
    offline_events = [e for e in log.events if e["kind"] == "intensity_live_offline"]
    assert len(offline_events) == 1
    for name in ("live_intensity=True", "electricitymaps_token", "ip_geolocation=True"):
        assert name in offline_events[0]["message"]
    assert any(e["kind"] == "intensity_offline_substitute" for e in log.events)
    assert all(r["intensity"]["kind"] == "annual_average" for r in log.epochs)
    log2 = read_run_log(t2.log_path)
    assert log2.header["intensity"]["kind"] == "fallback"
    assert any("ip_geolocation=True was not used" in e["message"] for e in log2.events)


def test_default_is_offline_and_needs_no_network(tmp_path, monkeypatch):
    guard = SocketGuard(monkeypatch)
    t = tracker(tmp_path, zone="DK1")  # a live-capable zone, nothing asked for
    _life_cycle(t)
    assert guard.calls == []
    assert t.config.offline is True
    assert isinstance(t.intensity, StaticIntensityProvider)


def test_a_live_source_put_off_for_ranks_starts_nothing_until_activated(monkeypatch):
    """What a rank other than 0 holds: settings checked, no thread, no socket, the zone's
    annual average; rank 0 (or a process alone) activates it and it fetches."""
    from carbon_callbacks.core.config import CarbonConfig
    from carbon_callbacks.core.intensity.ranks import DeferredLiveProvider, can_forecast
    from carbon_callbacks.core.intensity.resolve import resolve_intensity

    api = FakeApi()
    api.route(r"^/dataset/", eds_handler({"CO2Emis": [], "CO2EmisProg": []}))
    settings = {
        "zone": "DK1",
        "live_intensity": True,
        "_endpoints": {"energidataservice_base_url": api.url},
    }
    try:
        with pytest.raises(ConfigError, match="serves zone"):  # still refused at once
            resolve_intensity(
                CarbonConfig.from_kwargs(**{**settings, "live_intensity": "gb"}),
                EventLog(),
                {},
                defer_live=True,
            )
        events = EventLog()
        guard = SocketGuard(monkeypatch)
        provider = resolve_intensity(
            CarbonConfig.from_kwargs(**settings), events, {}, defer_live=True
        )
        assert isinstance(provider, DeferredLiveProvider) and provider.live is None
        assert provider.zone == "DK1"
        assert provider.intensity_over(0.0, 1.0) == zone_value("DK")
        assert provider.forecast_over(0.0, 1.0) is None and not can_forecast(provider)
        assert guard.calls == [] and api.requests == [] and events.events == []
        assert "carbon_callbacks-intensity-DK1" not in [t.name for t in threading.enumerate()]
        monkeypatch.undo()
        live_provider = provider.activate(events)
        assert provider.activate(events) is live_provider  # once
        assert isinstance(live_provider, LiveIntensityProvider) and can_forecast(live_provider)
        assert live_provider.wait_ready(5.0)
        assert api.hits(r"^/dataset/CO2Emis$")
        provider.close()
        assert provider.activate(events) is provider  # closed: nothing starts again
        live_provider._thread.join(2.0)
        assert not live_provider.running
    finally:
        api.close()


def test_rank_zero_value_held_over_another_window_says_so():
    from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensitySegment
    from carbon_callbacks.core.intensity.ranks import HELD_NOTE, held_over

    annual = zone_value("DK")
    assert held_over(annual, 10.0, 20.0) is annual  # no window: nothing to hold
    seg = IntensitySegment(100.0, 160.0, 80.0, "measured", "EDS", "direct", 0.0, 300.0)
    live_value = IntensityEstimate(80.0, "DK1", "EDS", "direct", "measured", None, 100.0, 160.0,
                                   (seg,))  # fmt: skip
    held = held_over(live_value, 200.0, 230.0)
    assert (held.intensity_g_per_kwh, held.kind, held.zone) == (80.0, "measured", "DK1")
    assert (held.start_unix_s, held.end_unix_s) == (200.0, 230.0)
    (one,) = held.segments
    assert (one.start_unix_s, one.end_unix_s) == (200.0, 230.0)
    assert (one.value_start_unix_s, one.value_end_unix_s) == (100.0, 160.0)  # rank 0's window
    assert one.note == HELD_NOTE


def test_token_never_reaches_logs_warnings_or_reprs(tmp_path):
    api = FakeApi()
    api.route(r"/carbon-intensity/", Response(401, {"message": "Invalid auth-token"}))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = tracker(
                tmp_path,
                zone="DE",
                electricitymaps_token=TOKEN,
                live_intensity="electricitymaps",
                _endpoints={"electricitymaps_base_url": api.url},
            ).start()
            assert t.intensity.wait_ready(5.0)
            run_epochs(t, 1, 0.02)
            t.stop()
    finally:
        api.close()
    assert api.requests and all(r.headers["auth-token"] == TOKEN for r in api.requests)
    text = Path(t.log_path).read_text()
    assert TOKEN not in text
    assert '"electricitymaps_token":"<redacted>"' in text
    assert "rejected the token" in text  # the failure is recorded, the token is not
    assert all(TOKEN not in str(w.message) for w in caught)
    assert TOKEN not in repr(t.config) and TOKEN not in str(t.config.to_dict())
    assert TOKEN not in repr(t.intensity) and TOKEN not in repr(t.intensity.source)
    rec = read_run_log(t.log_path).epochs[0]
    assert rec["intensity"]["intensity_g_per_kwh"] == zone_value("DE").intensity_g_per_kwh


def test_unknown_zone_at_electricitymaps_continues_on_the_labelled_annual_value(tmp_path):
    api = FakeApi()
    api.route(r"/history$", Response(404, {"message": "zone not found"}))
    try:
        t = tracker(
            tmp_path,
            zone="DE",
            electricitymaps_zone="DE-XYZ",
            electricitymaps_token=TOKEN,
            live_intensity=True,
            _endpoints={"electricitymaps_base_url": api.url},
        ).start()
        assert t.intensity.wait_ready(5.0)
        (m,) = run_epochs(t, 1, 0.02)
        t.stop()
    finally:
        api.close()
    assert m[keys.INTENSITY_G_PER_KWH] == zone_value("DE").intensity_g_per_kwh
    events = {e["kind"]: e["message"] for e in read_run_log(t.log_path).events}
    assert "does not know 'DE-XYZ'" in events["intensity_live_disabled"]


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"zone": "DKK", "live_intensity": True}, "Did you mean 'DK'"),
        ({"zone": "DE", "live_intensity": True}, "electricitymaps_token"),
        ({"zone": "SE", "live_intensity": "gb"}, "serves zone(s) ['GB']"),
        ({"zone": "US-CA", "live_intensity": True, "electricitymaps_token": TOKEN}, "US-CAL-CISO"),
        ({"zone": "DE", "electricitymaps_token": "short"}, "does not look like an API token"),
        ({"zone": "DE", "electricitymaps_token": "Bearer abcdefgh12"}, "bare token"),
        ({"live_intensity": "electricitymaps"}, "needs a token"),
        ({"live_intensity": "yes"}, "live_intensity must be"),
        ({"_endpoints": {"electricitymaps_base_url": "http://api.example.org"}}, "plain http"),
    ],
)
def test_bad_live_settings_are_refused_at_construction(tmp_path, settings, needle):
    with pytest.raises(ConfigError) as info:
        tracker(tmp_path, **settings)
    assert needle in str(info.value)
    token = settings.get("electricitymaps_token")
    if token:
        assert token not in str(info.value)


def test_malformed_token_from_the_environment_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN", "abc def ghi")
    with pytest.raises(ConfigError, match="CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN"):
        tracker(tmp_path, zone="DE")


@pytest.mark.parametrize("epochs", [1, 0])
def test_stop_closes_the_live_thread_started_or_not(tmp_path, epochs):
    api = FakeApi()
    api.route(r"^/intensity/", Response(200, {"data": []}))
    try:
        t = tracker(tmp_path, zone="GB", live_intensity=True, _endpoints={"gb_base_url": api.url})
        t.start()
        assert t.intensity.wait_ready(5.0)
        assert "carbon_callbacks-intensity-GB" in [th.name for th in threading.enumerate()]
        run_epochs(t, epochs, 0.01)
        t.stop()
        t.intensity._thread.join(2.0)
        assert not t.intensity.running
        assert "carbon_callbacks-intensity-GB" not in [th.name for th in threading.enumerate()]
    finally:
        api.close()


def test_a_tracker_never_started_starts_no_live_source(tmp_path):
    api = FakeApi()
    api.route(r"^/intensity/", Response(200, {"data": []}))
    try:
        t = tracker(tmp_path, zone="GB", live_intensity=True, _endpoints={"gb_base_url": api.url})
        t.stop()
        assert "carbon_callbacks-intensity-GB" not in [th.name for th in threading.enumerate()]
        assert api.requests == []
    finally:
        api.close()


def test_given_provider_is_not_closed_by_the_tracker(tmp_path):
    provider = live(TimedSource([(-10, 3600, 50.0, "measured")]))
    t = tracker(tmp_path, intensity=provider)
    run_epochs(t, 1, 0.01)
    t.stop()
    assert provider.running  # the caller owns it
    provider.close()


def test_ip_geolocation_failure_falls_back_to_world_labelled(tmp_path):
    api = FakeApi()
    api.route(r"^/json$", Response(500, "down"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CarbonCallbacksWarning)
            t = tracker(
                tmp_path, ip_geolocation=True, _endpoints={"ip_geolocation_url": f"{api.url}/json"}
            )
        run_epochs(t, 1, 0.01)
        t.stop()
    finally:
        api.close()
    log = read_run_log(t.log_path)
    assert log.header["intensity"]["kind"] == "fallback"
    fallback = [e for e in log.events if e["kind"] == "intensity_fallback"]
    assert len(fallback) == 1 and "IP geolocation failed" in fallback[0]["message"]
