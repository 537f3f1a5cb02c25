"""Carbon-aware start: the exact search on known forecasts, the Python API and the CLI."""

from __future__ import annotations

import json
import math
import time

import pytest
from fake_intensity_api import (
    Response,
    eds_handler,
    eds_records,
    em_forecast_answer,
    em_history_answer,
    gb_national_answer,
)
from power_traces import ConstantCounterSensor

import carbon_callbacks
from carbon_callbacks.cli import intensity as cli_intensity
from carbon_callbacks.core.config import ConfigError
from carbon_callbacks.core.intensity.schedule import (
    EXIT_BAD_INPUT,
    EXIT_NO_DATA,
    ScheduleError,
    best_start,
    plan_start,
)
from carbon_callbacks.core.intensity.timeline import IntensityPoint
from carbon_callbacks.core.tracker import CarbonTracker

pytestmark = pytest.mark.usefixtures("loopback_only")

H = 3600.0
T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "CARBON_CALLBACKS_OFFLINE",
        "CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


def hourly(values, start=T0, kind="forecast"):
    return [
        IntensityPoint(start + i * H, start + (i + 1) * H, v, kind, f"test {kind}", "direct")
        for i, v in enumerate(values)
    ]


def brute_force(points, duration_s, now, limit, step=60.0):
    """The best exact mean over a fine grid of starts (for checking the exact search)."""

    def mean(t):  # exact: the overlap of [t, t + duration] with every slot
        total = sum(
            p.intensity_g_per_kwh
            * max(0.0, min(p.end_unix_s, t + duration_s) - max(p.start_unix_s, t))
            for p in points
        )
        return total / duration_s

    starts = [now + k * step for k in range(int((limit - duration_s - now) / step) + 1)]
    starts.append(limit - duration_s)
    return min(mean(t) for t in starts)


def test_best_start_on_a_known_forecast():
    points = hourly([400, 300, 100, 50, 60, 500])
    plan = plan_start(points, 2 * H, now_unix_s=T0, energy_kwh=10.0, zone="DK1")
    # windows of two hours: 350, 200, 75, 55, 280 -> start at 03:00, mean 55
    assert plan.start_unix_s == T0 + 3 * H
    assert plan.end_unix_s == T0 + 5 * H
    assert plan.intensity_g_per_kwh == pytest.approx(55.0)
    assert plan.now_intensity_g_per_kwh == pytest.approx(350.0)
    assert plan.saving_fraction == pytest.approx(1 - 55 / 350)
    assert plan.co2_g == pytest.approx(550.0) and plan.now_co2_g == pytest.approx(3500.0)
    assert plan.saving_co2_g == pytest.approx(2950.0)
    assert plan.delay_s == 3 * H and plan.horizon_end_unix_s == T0 + 6 * H
    text = plan.describe()
    assert "2024-05-01 03:00 UTC" in text and "84.3 % lower" in text and "saves 2950 g" in text


def test_optimum_between_slot_starts_is_found_exactly():
    points = hourly([400, 300, 100, 50, 60, 500])
    plan = plan_start(points, 1.5 * H, now_unix_s=T0)
    # best 1.5 h: 02:30-04:00 = (0.5*100 + 1*50)/1.5 = 66.7, better than 03:00-04:30 (53.3?)
    # 03:00-04:30 = (1*50 + 0.5*60)/1.5 = 53.33 -> best; the end meets a slot boundary nowhere
    assert plan.intensity_g_per_kwh == pytest.approx((50 + 0.5 * 60) / 1.5)
    assert plan.start_unix_s == T0 + 3 * H
    best = brute_force(points, 1.5 * H, T0, T0 + 6 * H)
    assert plan.intensity_g_per_kwh <= best + 1e-6


def test_end_aligned_optimum():
    # cheap slot at the end: the best 1.5 h window ends where the cheap hour ends
    points = hourly([300, 300, 200, 10, 900])
    plan = plan_start(points, 1.5 * H, now_unix_s=T0)
    assert plan.start_unix_s == pytest.approx(T0 + 2.5 * H)
    assert plan.intensity_g_per_kwh == pytest.approx((0.5 * 200 + 10) / 1.5)


@pytest.mark.parametrize("seed", range(8))
def test_exact_search_is_never_beaten_by_a_grid(seed):
    import random

    rng = random.Random(seed)
    values = [rng.uniform(20, 500) for _ in range(12)]
    points = hourly(values)
    now = T0 + rng.uniform(0, H)
    duration = rng.uniform(0.3, 5) * H
    plan = plan_start(points, duration, now_unix_s=now)
    assert plan.intensity_g_per_kwh <= brute_force(points, duration, now, T0 + 12 * H) + 1e-6
    assert now <= plan.start_unix_s <= T0 + 12 * H - duration + 1e-6
    # the reported mean is the window's own mean
    own = brute_force(points, duration, plan.start_unix_s, plan.start_unix_s + duration)
    assert plan.intensity_g_per_kwh == pytest.approx(own, rel=1e-9)
    now_mean = brute_force(points, duration, now, now + duration)
    assert plan.now_intensity_g_per_kwh == pytest.approx(now_mean, rel=1e-9)


def test_now_mid_slot_and_measured_current_value():
    points = hourly([200], kind="measured") + hourly([100, 400], start=T0 + H)
    now = T0 + 0.5 * H
    plan = plan_start(points, H, now_unix_s=now)
    assert plan.now_intensity_g_per_kwh == pytest.approx(0.5 * 200 + 0.5 * 100)
    assert plan.start_unix_s == T0 + H and plan.intensity_g_per_kwh == 100
    assert "test measured" in plan.source and "test forecast" in plan.source


def test_ties_go_to_the_earliest_start_and_now_can_be_best():
    flat = plan_start(hourly([100] * 6), 2 * H, now_unix_s=T0 + 10)
    assert flat.start_unix_s == T0 + 10 and flat.saving_fraction == 0
    assert "starting now is best" in flat.describe()
    rising = plan_start(hourly([10, 20, 30, 40]), H, now_unix_s=T0)
    assert rising.delay_s == 0


def test_within_limits_the_latest_end():
    points = hourly([400, 300, 100, 50, 60, 500])
    plan = plan_start(points, 2 * H, now_unix_s=T0, latest_end_unix_s=T0 + 4 * H)
    assert plan.start_unix_s == T0 + 2 * H and plan.intensity_g_per_kwh == pytest.approx(75.0)
    assert plan.end_unix_s <= T0 + 4 * H


def test_forecast_shorter_than_the_run_is_a_clear_error():
    with pytest.raises(ScheduleError) as info:
        plan_start(hourly([100] * 9), 12 * H, now_unix_s=T0)
    message = str(info.value)
    assert "reaches 2024-05-01T09:00Z, 9.0 h ahead, shorter than the 12.0 h run" in message
    assert info.value.exit_code == EXIT_NO_DATA


def test_a_gap_ends_the_usable_forecast():
    points = hourly([100, 100]) + hourly([10, 10], start=T0 + 3 * H)
    with pytest.raises(ScheduleError, match="2.0 h ahead"):
        plan_start(points, 3 * H, now_unix_s=T0)


def test_no_value_for_now():
    with pytest.raises(ScheduleError, match="no value for now"):
        plan_start(hourly([100], start=T0 + H), H, now_unix_s=T0)
    with pytest.raises(ScheduleError, match="no value for now"):
        plan_start([], H, now_unix_s=T0)


@pytest.mark.parametrize("bad", [0, -5, math.nan, math.inf])
def test_bad_duration(bad):
    with pytest.raises(ScheduleError) as info:
        plan_start(hourly([1, 2]), bad, now_unix_s=T0)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_plan_to_dict_is_json_ready():
    plan = plan_start(hourly([400, 300, 100]), H, now_unix_s=T0, energy_kwh=2.0)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["start"] == "2024-05-01T02:00:00Z" and data["saving_co2_g"] == 600.0


# -- the Python API against loopback services --------------------------------------------------


def _eds(api, now):
    t0 = now - now % 300
    api.route(
        r"^/dataset/",
        eds_handler(
            {
                "CO2Emis": eds_records(t0 - 600, [200, 210, 220]),
                "CO2EmisProg": eds_records(t0, [220] * 12 + [90] * 12 + [300] * 84),
            }
        ),
    )
    return t0


def test_best_start_python_api_with_energidataservice(api):
    now = T0 + 1234.0
    t0 = _eds(api, now)
    plan = carbon_callbacks.best_start(
        "DK1",
        3600,
        energy_kwh=5.0,
        now_unix_s=now,
        _endpoints={"energidataservice_base_url": api.url},
    )
    assert plan.start_unix_s == t0 + 3600  # the hour of 90 g
    assert plan.intensity_g_per_kwh == pytest.approx(90.0)
    assert plan.zone == "DK1" and "CO2EmisProg" in plan.source
    assert plan.horizon_end_unix_s == t0 + 108 * 300


def test_best_start_gb_and_electricitymaps(api):
    now = T0 + 600.0
    start = T0 - 1800
    api.route(
        r"^/intensity/",
        Response(200, gb_national_answer(start, [250], [255, 240, 60, 60, 300, 300])),
    )
    plan = best_start("GB", H, now_unix_s=now, _endpoints={"gb_base_url": api.url})
    assert plan.start_unix_s == T0 + 1800 and plan.intensity_g_per_kwh == 60
    api.route(r"/history$", Response(200, em_history_answer(T0, [500])))
    api.route(r"/forecast$", Response(200, em_forecast_answer(T0 + H, [400, 100, 200])))
    plan = best_start(
        "DE",
        H,
        now_unix_s=now,
        electricitymaps_token="tok-1234567890",
        _endpoints={"electricitymaps_base_url": api.url},
    )
    assert plan.start_unix_s == T0 + 2 * H and plan.intensity_g_per_kwh == 100


def test_best_start_without_forecast_says_why(api):
    api.route(r"/history$", Response(200, em_history_answer(T0, [500])))
    api.route(r"/forecast$", Response(403, {"message": "upgrade your plan"}))
    with pytest.raises(ScheduleError, match="forecast unavailable"):
        best_start(
            "DE",
            H,
            now_unix_s=T0 + 5,
            electricitymaps_token="tok-1234567890",
            _endpoints={"electricitymaps_base_url": api.url},
        )


def test_best_start_service_down(api):
    api.route(r"^/intensity/", Response(503, "maintenance"))
    with pytest.raises(ScheduleError, match="HTTP 503") as info:
        best_start("GB", H, _endpoints={"gb_base_url": api.url}, timeout_s=2.0)
    assert info.value.exit_code == EXIT_NO_DATA


def test_best_start_bad_input():
    with pytest.raises(ConfigError, match="Did you mean"):
        best_start("DKK", H)
    with pytest.raises(ConfigError, match="electricitymaps_token"):
        best_start("FR", H)
    with pytest.raises(ScheduleError, match="duration"):
        best_start("DK1")


# -- the command line ------------------------------------------------------------------------


def test_cli_prints_the_plan(api, capsys):
    _eds(api, time.time())
    code = cli_intensity.main(
        ["best-start", "--zone", "DK1", "--duration", "1h", "--energy-kwh", "5",
         "--base-url", api.url]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "Best start for a 1 h 00 min run in DK1" in out
    assert "mean intensity 90.0 gCO2/kWh" in out and "with 5 kWh" in out


def test_cli_json_and_run_log(api, capsys, tmp_path):
    _eds(api, time.time())
    tracker = CarbonTracker(
        epochs=5,
        sensors=[ConstantCounterSensor("gpu:0", 100.0)],
        log_dir=str(tmp_path),
        zone="DK",
        verbose=0,
        interval_s=0.02,
    )
    for _ in range(2):
        tracker.epoch_start()
        time.sleep(0.01)
        tracker.epoch_end()
    tracker.stop()
    code = cli_intensity.main(
        ["best-start", "--zone", "DK1", "--run-log", tracker.log_path, "--json",
         "--base-url", api.url]
    )  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["duration_s"] == pytest.approx(tracker.prediction.duration_s)
    assert data["energy_kwh"] == pytest.approx(tracker.prediction.energy_kwh)
    assert "last prediction" in data["input"]


def test_cli_exit_codes(api, capsys, monkeypatch):
    _eds(api, time.time())
    short = cli_intensity.main(
        ["best-start", "--zone", "DK1", "--duration", "2d", "--base-url", api.url]
    )
    assert short == EXIT_NO_DATA
    assert "shorter than the 48.0 h run" in capsys.readouterr().err
    assert cli_intensity.main(["best-start", "--zone", "Q9", "--duration", "1h"]) == 2
    assert "not a known zone" in capsys.readouterr().err
    monkeypatch.setenv("CARBON_CALLBACKS_OFFLINE", "1")
    before = len(api.requests)
    assert cli_intensity.main(["best-start", "--zone", "DK1", "--duration", "1h",
                               "--base-url", api.url]) == 2  # fmt: skip
    assert "network is off" in capsys.readouterr().err
    assert len(api.requests) == before
    with pytest.raises(SystemExit):
        cli_intensity.main(["best-start", "--zone", "DK1", "--duration", "soon"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("6h", 21600), ("1h30m", 5400), ("1.5h", 5400), ("2d", 172800),
     ("45", 45), ("10min", 600)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert cli_intensity.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "h", "5x", "-1h", "0", "1h-2m"])
def test_parse_duration_refuses(bad):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli_intensity.parse_duration(bad)
