"""The background live provider: answers never wait, failures degrade labelled, threads stop."""

from __future__ import annotations

import threading
import time

import pytest
from fake_intensity_api import FakeApi, Response, eds_handler, eds_records

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity import live as live_mod
from carbon_callbacks.core.intensity.energidataservice import EnergiDataServiceSource
from carbon_callbacks.core.intensity.http import FetchError, HttpClient
from carbon_callbacks.core.intensity.live import FetchResult, LiveIntensityProvider, LiveSource
from carbon_callbacks.core.intensity.static import StaticIntensityProvider, zone_value
from carbon_callbacks.core.intensity.timeline import IntensityPoint

pytestmark = [
    pytest.mark.usefixtures("loopback_only"),
    pytest.mark.filterwarnings("ignore::carbon_callbacks.core.events.CarbonCallbacksWarning"),
]
DK = zone_value("DK")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CARBON_CALLBACKS_OFFLINE", raising=False)


class ListSource(LiveSource):
    """Serves prepared results (or raises prepared errors) in turn; the last one repeats."""

    name = "test"
    zone = "DK1"
    description = "test source"
    basis = "direct"
    resolution_s = 300.0
    refresh_s = 3600.0
    has_forecast = True

    def __init__(self, *results):
        self.results = list(results)
        self.calls = 0

    def fetch(self, client, now_unix_s):
        self.calls += 1
        item = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(item, BaseException):
            raise item
        return item


def pts(*spans, kind="measured"):
    return [IntensityPoint(a, b, v, kind, f"test {kind}", "direct") for a, b, v in spans]


def provider(source, events=None, **kw) -> LiveIntensityProvider:
    kw.setdefault("start", False)
    return LiveIntensityProvider(
        source, StaticIntensityProvider("DK"), events or EventLog(), client=HttpClient(), **kw
    )


def test_answers_come_from_the_values_held():
    p = provider(ListSource(FetchResult(pts((0, 300, 100.0), (300, 600, 300.0)))))
    assert p.intensity_over(100, 200).intensity_g_per_kwh == DK.intensity_g_per_kwh  # nothing yet
    assert p.intensity_over(100, 200).segments[0].note == "no live value yet"
    assert p.refresh_once() == 3600.0
    est = p.intensity_over(200, 400)
    assert est.intensity_g_per_kwh == pytest.approx(200.0)
    assert est.kind == "measured" and est.zone == "DK1"
    assert p.state == "ok" and p.refreshes == 1


def test_background_thread_fetches_at_once_and_stops_on_close():
    source = ListSource(FetchResult(pts((0, 1e10, 42.0))))
    events = EventLog()
    p = provider(source, events, start=True)
    try:
        assert p.wait_ready(30.0)
        assert p.intensity_over(1e9, 1e9 + 10).intensity_g_per_kwh == 42.0
        assert p.running
        assert [e.kind for e in events.events] == ["intensity_live_started"]
        assert "test source" in events.events[0].message
    finally:
        p.close()
    assert not p.running and p.state == "stopped"
    assert source.calls == 1  # refresh_s is an hour: nothing more


def test_failures_are_recorded_once_counted_and_recovery_noted():
    ok = FetchResult(pts((0, 300, 10.0)))
    source = ListSource(
        FetchError("boom"), FetchError("boom"), FetchError("boom"), FetchError("other"), ok
    )
    events = EventLog()
    p = provider(source, events, retry_base_s=30.0, refresh_s=100.0)
    delays = [p.refresh_once() for _ in range(5)]
    assert delays == [30.0, 60.0, 100.0, 100.0, 100.0]  # doubling, capped at the refresh
    kinds = [e.kind for e in events.events]
    assert kinds == ["intensity_live_error", "intensity_live_error", "intensity_live_recovered"]
    assert "boom" in events.events[0].message
    assert "the previous failure repeated 2 time(s)" in events.events[1].message
    assert "after 4 failed refresh(es)" in events.events[2].message
    assert "using DK" in events.events[0].message  # says what is used meanwhile


def test_rate_limit_wait_is_honoured_by_the_refresh_loop():
    source = ListSource(FetchError("rate limited (HTTP 429)", status=429, retry_after_s=900.0))
    p = provider(source, retry_base_s=30.0, refresh_s=3600.0)
    assert p.refresh_once() == 900.0


def test_permanent_failure_stops_refreshing_and_degrades_labelled():
    source = ListSource(
        FetchError("Electricity Maps rejected the token (HTTP 401)", permanent=True)
    )
    events = EventLog()
    p = provider(source, events, start=True)
    try:
        assert p.wait_ready(30.0)
        deadline = time.monotonic() + 30
        while p.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not p.running and p.state == "disabled"
        assert [e.kind for e in events.events] == ["intensity_live_disabled"]
        assert "rejected the token" in events.events[0].message
        est = p.intensity_over(0, 60)
        assert est.intensity_g_per_kwh == DK.intensity_g_per_kwh
        assert est.kind == "annual_average" and est.source == DK.source
    finally:
        p.close()
    assert source.calls == 1


def test_an_empty_answer_and_a_parser_bug_are_failures_not_crashes():
    source = ListSource(FetchResult([]), ZeroDivisionError("bug"), FetchResult(pts((0, 60, 5.0))))
    events = EventLog()
    p = provider(source, events)
    p.refresh_once()
    p.refresh_once()
    p.refresh_once()
    messages = [e.message for e in events.events]
    assert "held no values" in messages[0]
    assert "ZeroDivisionError: bug" in messages[1]
    assert p.intensity_over(0, 60).intensity_g_per_kwh == 5.0


def test_partial_problems_are_recorded_once():
    result = FetchResult(pts((0, 60, 5.0)), ["forecast unavailable (HTTP 403)"])
    events = EventLog()
    p = provider(ListSource(result), events)
    p.refresh_once()
    p.refresh_once()
    assert [e.kind for e in events.events].count("intensity_live_partial") == 1


def test_forecast_over_uses_the_forecast_and_labels_what_lies_beyond_it():
    measured = pts((0, 300, 100.0))
    forecast = pts((300, 600, 200.0), (600, 900, 400.0), kind="forecast")
    events = EventLog()
    p = provider(ListSource(FetchResult(measured + forecast)), events)
    assert p.forecast_over(300, 900) is None  # nothing held yet
    p.refresh_once()
    inside = p.forecast_over(300, 900)
    assert inside.intensity_g_per_kwh == pytest.approx(300.0)
    assert inside.kind == "forecast"
    assert p.forecast_horizon_unix_s == 900
    # 1800 s asked: 600 s forecast, 300 s held (one slot), 900 s annual average
    long = p.forecast_over(300, 2100)
    expected = (300 * 200 + 300 * 400 + 300 * 400 + 900 * DK.intensity_g_per_kwh) / 1800
    assert long.intensity_g_per_kwh == pytest.approx(expected)
    assert long.kind == "mixed"
    assert long.segments[-1].note.startswith("beyond the forecast horizon")
    p.forecast_over(300, 5000)
    short = [e for e in events.events if e.kind == "intensity_forecast_short"]
    assert len(short) == 1 and "0.2 h of the 0.5 h" in short[0].message


def test_source_without_forecast_values_gives_no_forecast():
    p = provider(ListSource(FetchResult(pts((0, 300, 100.0)))))
    p.refresh_once()
    assert p.forecast_over(0, 600) is None


def test_a_stale_forecast_is_no_forecast():
    p = provider(ListSource(FetchResult(pts((0, 300, 100.0), kind="forecast"))))
    p.refresh_once()
    assert p.forecast_over(300, 900) is None
    partly = p.forecast_over(200, 700)  # 100 s forecast, one slot (300 s) held, 100 s annual
    assert [s.note[:4] for s in partly.segments] == ["", "held", "beyo"]
    assert partly.kind == "mixed"


def test_stalled_server_never_delays_an_answer():
    api = FakeApi()
    api.route(r"^/dataset/", Response(stall=True))
    try:
        source = EnergiDataServiceSource("DK1", base_url=api.url)
        client = HttpClient(read_timeout_s=60.0)
        p = LiveIntensityProvider(source, StaticIntensityProvider("DK"), EventLog(), client=client)
        assert api.requested.wait(30.0)  # the refresh thread is now stuck waiting for an answer
        t0 = time.perf_counter()
        for i in range(100):
            est = p.intensity_over(1e9 + i, 1e9 + i + 60)
        assert time.perf_counter() - t0 < 10.0  # none waited for the 60 s read timeout
        assert est.intensity_g_per_kwh == DK.intensity_g_per_kwh
        assert est.segments[0].note == "no live value yet"
        t0 = time.perf_counter()
        p.close(join_s=0.2)
        assert time.perf_counter() - t0 < 10.0
    finally:
        api.close()
    p._thread.join(30.0)  # released by the server closing: the thread ends
    assert not p.running


def test_energidataservice_provider_end_to_end():
    now = time.time()
    t0 = now - now % 300
    api = FakeApi()
    api.route(
        r"^/dataset/",
        eds_handler(
            {
                "CO2Emis": eds_records(t0 - 900, [100, 110, 120, 130]),
                "CO2EmisProg": eds_records(t0 + 300, [90, 80]),
            }
        ),
    )
    try:
        p = LiveIntensityProvider(
            EnergiDataServiceSource("DK1", base_url=api.url), StaticIntensityProvider("DK")
        )
        assert p.wait_ready(30.0)
        est = p.intensity_over(t0 + 10, t0 + 20)
        assert est.intensity_g_per_kwh == 130.0 and est.kind == "measured"
        assert est.source == "Energi Data Service CO2Emis (measured)"
        fc = p.forecast_over(t0 + 300, t0 + 900)
        assert fc.intensity_g_per_kwh == pytest.approx(85.0) and fc.kind == "forecast"
    finally:
        p.close()
        api.close()


def test_exit_hook_closes_running_providers():
    p = provider(ListSource(FetchResult(pts((0, 60, 1.0)))), start=True)
    assert p.wait_ready(30.0)
    live_mod._close_all_at_exit()
    p._thread.join(30.0)
    assert not p.running and p.client.stop.is_set()


def test_no_thread_at_construction_when_asked_and_start_is_idempotent():
    before = threading.active_count()
    p = provider(ListSource(FetchResult(pts((0, 60, 1.0)))))
    assert threading.active_count() == before and not p.running
    p.start()
    p.start()
    assert p.wait_ready(30.0)
    p.close()
    p.start()  # not after close
    assert not p.running


def test_the_same_failure_at_another_time_is_still_recorded_once():
    errors = [
        FetchError(f"server error (HTTP 503) from http://x/intensity/2024-05-01T1{i}:30Z/fw48h")
        for i in range(4)
    ]
    partial = [
        FetchResult(
            pts((0, 60, 5.0)), [f"CO2Emis failed: HTTP 500 from http://x?start=2024-05-0{i}"]
        )
        for i in range(1, 4)
    ]
    events = EventLog()
    p = provider(ListSource(*errors, *partial), events)
    for _ in range(7):
        p.refresh_once()
    kinds = [e.kind for e in events.events]
    assert kinds == ["intensity_live_error", "intensity_live_partial", "intensity_live_recovered"]
    assert "repeated" not in events.events[0].message
