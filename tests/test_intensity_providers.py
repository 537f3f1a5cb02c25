"""Each live source against a loopback server answering in the real API's documented shape."""

from __future__ import annotations

import json
import math

import pytest
from fake_intensity_api import (
    Response,
    eds_handler,
    eds_records,
    em_entry,
    em_forecast_answer,
    em_history_answer,
    gb_national_answer,
    gb_regional_answer,
)

from carbon_callbacks.core.intensity.electricitymaps import ElectricityMapsSource
from carbon_callbacks.core.intensity.energidataservice import EnergiDataServiceSource
from carbon_callbacks.core.intensity.gb import GBCarbonIntensitySource, outward_code
from carbon_callbacks.core.intensity.http import FetchError, HttpClient
from carbon_callbacks.core.intensity.live import parse_utc

pytestmark = pytest.mark.usefixtures("loopback_only")

NOW = 1_714_561_234.0  # 2024-05-01T11:00:34Z
HOUR = 3600.0
TOKEN = "em-test-token-0123456789"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CARBON_CALLBACKS_OFFLINE", raising=False)


def client() -> HttpClient:
    return HttpClient(read_timeout_s=2.0, max_attempts=2, backoff_s=0.01)


def slot(t: float, size: float) -> float:
    return math.floor(t / size) * size


# -- time parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T10:05:00",
        "2024-05-01T10:05Z",
        "2024-05-01T10:05:00.000Z",
        "2024-05-01T12:05:00+02:00",
        "2024-05-01T10:05:00.5Z",
    ],
)
def test_parse_utc_forms(text):
    assert parse_utc(text) == pytest.approx(1714557900.0, abs=0.6)


@pytest.mark.parametrize("bad", [None, "", "yesterday", 17, "2024-13-01T00:00"])
def test_parse_utc_refuses(bad):
    with pytest.raises(ValueError):
        parse_utc(bad)


# -- Energi Data Service ---------------------------------------------------------------------


def test_energidataservice_measured_and_forecast(api):
    t0 = slot(NOW, 300) - 6 * 300
    measured = eds_records(t0, [200, 210, 220, None, 230, 240])  # a null: not yet published
    forecast = eds_records(t0 + 6 * 300, [150, 140, 130, 120])
    api.route(r"^/dataset/", eds_handler({"CO2Emis": measured, "CO2EmisProg": forecast}))
    source = EnergiDataServiceSource("dk1", base_url=api.url)
    result = source.fetch(client(), NOW)
    got = [(p.start_unix_s - t0, p.intensity_g_per_kwh, p.kind) for p in result.points]
    assert got == [
        (0, 200, "measured"),
        (300, 210, "measured"),
        (600, 220, "measured"),
        (1200, 230, "measured"),
        (1500, 240, "measured"),
        (1800, 150, "forecast"),
        (2100, 140, "forecast"),
        (2400, 130, "forecast"),
        (2700, 120, "forecast"),
    ]
    assert all(p.end_unix_s - p.start_unix_s == 300 for p in result.points)
    assert all(p.basis == "direct" for p in result.points)
    assert result.points[0].source == "Energi Data Service CO2Emis (measured)"
    assert result.points[-1].source == "Energi Data Service CO2EmisProg (forecast)"
    assert result.problems == []
    req = api.hits(r"/dataset/CO2Emis$")[0]
    assert json.loads(req.query["filter"]) == {"PriceArea": ["DK1"]}
    assert req.query["timezone"] == "utc" and req.query["sort"] == "Minutes5UTC ASC"
    assert req.query["start"] <= req.query["end"]


def test_energidataservice_zone_dk_is_the_mean_of_both_areas(api):
    t0 = slot(NOW, 300)
    rows = eds_records(t0, [100], ("DK1",)) + eds_records(t0, [300], ("DK2",))
    rows += eds_records(t0 + 300, [50], ("DK1",))  # DK2 missing for this slot: not used
    api.route(r"^/dataset/CO2Emis$", eds_handler({"CO2Emis": rows}))
    api.route(r"^/dataset/CO2EmisProg$", eds_handler({"CO2EmisProg": []}))
    result = EnergiDataServiceSource("DK", base_url=api.url).fetch(client(), NOW)
    assert [p.intensity_g_per_kwh for p in result.points] == [200.0]
    assert "mean of DK1 and DK2" in result.points[0].source
    assert json.loads(api.hits("CO2Emis$")[0].query["filter"]) == {"PriceArea": ["DK1", "DK2"]}
    assert any("CO2EmisProg returned no values" in p for p in result.problems)


def test_energidataservice_pagination_reads_every_page_and_is_bounded(api):
    t0 = slot(NOW, 300) - 30 * 300
    rows = eds_records(t0, [float(i) for i in range(30)])
    api.route(r"^/dataset/", eds_handler({"CO2Emis": rows, "CO2EmisProg": []}))
    source = EnergiDataServiceSource("DK1", base_url=api.url, page_limit=10, max_pages=5)
    result = source.fetch(client(), NOW)
    assert [p.intensity_g_per_kwh for p in result.points] == [float(i) for i in range(30)]
    assert [r.query["offset"] for r in api.hits("CO2Emis$")] == ["0", "10", "20"]
    # a huge dataset: never more than max_pages requests per dataset
    many = eds_records(t0 - 10_000 * 300, [1.0] * 10_000)
    api.routes.clear()
    api.requests.clear()
    api.route(r"^/dataset/", eds_handler({"CO2Emis": many, "CO2EmisProg": []}))
    EnergiDataServiceSource("DK1", base_url=api.url, page_limit=10, max_pages=5).fetch(
        client(), NOW
    )
    assert len(api.hits("CO2Emis$")) == 5


def test_energidataservice_accepts_a_bare_list_and_skips_other_areas(api):
    t0 = slot(NOW, 300)
    rows = eds_records(t0, [90.0], ("DK1", "DK2"))
    api.route(r"^/dataset/CO2Emis$", Response(200, rows))  # list, not the object
    api.route(r"^/dataset/CO2EmisProg$", Response(200, {"total": 0, "records": []}))
    result = EnergiDataServiceSource("DK2", base_url=api.url).fetch(client(), NOW)
    assert [(p.intensity_g_per_kwh, p.kind) for p in result.points] == [(90.0, "measured")]


def test_energidataservice_one_dataset_failing_is_a_partial_result(api):
    t0 = slot(NOW, 300)
    api.route(r"^/dataset/CO2Emis$", Response(500, "maintenance"))
    api.route(r"^/dataset/CO2EmisProg$", eds_handler({"CO2EmisProg": eds_records(t0, [77.0])}))
    result = EnergiDataServiceSource("DK1", base_url=api.url).fetch(client(), NOW)
    assert [p.kind for p in result.points] == ["forecast"]
    assert any("CO2Emis failed" in p and "HTTP 500" in p for p in result.problems)


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (Response(200, {"total": 1, "dataset": "CO2Emis"}), "no 'records' list"),
        (Response(200, "{oops"), "malformed JSON"),
        (
            Response(
                200, {"records": [{"Minutes5UTC": "soon", "PriceArea": "DK1", "CO2Emission": 1}]}
            ),
            "Minutes5UTC",
        ),
        (
            Response(
                200,
                {
                    "records": [
                        {
                            "Minutes5UTC": "2024-05-01T10:00:00",
                            "PriceArea": "DK1",
                            "CO2Emission": "high",
                        }
                    ]
                },
            ),
            "CO2Emission",
        ),
    ],
)
def test_energidataservice_malformed_answers_fail_clearly(api, answer, needle):
    api.route(r"^/dataset/", answer)
    with pytest.raises(FetchError) as info:
        EnergiDataServiceSource("DK1", base_url=api.url).fetch(client(), NOW)
    assert needle in str(info.value)


def test_energidataservice_empty_results(api):
    api.route(r"^/dataset/", eds_handler({"CO2Emis": [], "CO2EmisProg": []}))
    result = EnergiDataServiceSource("DK1", base_url=api.url).fetch(client(), NOW)
    assert result.points == []  # the live provider turns this into a labelled failure


def test_energidataservice_refuses_other_zones():
    with pytest.raises(ValueError, match="DK1, DK2"):
        EnergiDataServiceSource("SE")


# -- GB Carbon Intensity API -----------------------------------------------------------------


def test_gb_national_actual_is_measured_forecast_is_forecast(api):
    start = slot(NOW - 1800, 1800)
    answer = gb_national_answer(start, actual=[250, 240, None], forecast=[255, 245, 230, 210])
    api.route(r"^/intensity/", Response(200, answer))
    result = GBCarbonIntensitySource(base_url=api.url).fetch(client(), NOW)
    got = [(p.start_unix_s - start, p.intensity_g_per_kwh, p.kind) for p in result.points]
    assert got == [
        (0, 250, "measured"),
        (1800, 240, "measured"),
        (3600, 230, "forecast"),
        (5400, 210, "forecast"),
    ]
    assert result.points[0].source == "GB Carbon Intensity API national actual"
    assert result.points[0].basis == "direct"
    (req,) = api.requests
    assert req.path == "/intensity/2024-05-01T10:30Z/fw48h"


def test_gb_regional_by_id_object_shape(api):
    start = slot(NOW - 1800, 1800)
    api.route(r"^/regional/intensity/", Response(200, gb_regional_answer(start, [120, 110])))
    result = GBCarbonIntensitySource(region_id=13, base_url=api.url).fetch(client(), NOW)
    assert [(p.intensity_g_per_kwh, p.kind) for p in result.points] == [
        (120, "forecast"),
        (110, "forecast"),
    ]
    assert "London (region 13)" in result.points[0].source
    assert api.requests[0].path == "/regional/intensity/2024-05-01T10:30Z/fw48h/regionid/13"


def test_gb_regional_by_postcode_list_shape_sends_only_the_outward_code(api):
    start = slot(NOW - 1800, 1800)
    answer = gb_regional_answer(
        start, [99], postcode="RG10", as_list=True, regionid=12, shortname="South England"
    )
    api.route(r"^/regional/intensity/", Response(200, answer))
    source = GBCarbonIntensitySource(postcode="rg10 9xx", base_url=api.url)
    result = source.fetch(client(), NOW)
    assert [p.intensity_g_per_kwh for p in result.points] == [99]
    assert api.requests[0].path.endswith("/fw48h/postcode/RG10")
    assert "9XX" not in api.requests[0].path.upper()


def test_gb_region_mismatch_is_reported(api):
    start = slot(NOW - 1800, 1800)
    api.route(r"^/regional/", Response(200, gb_regional_answer(start, [99], regionid=4)))
    result = GBCarbonIntensitySource(region_id=13, base_url=api.url).fetch(client(), NOW)
    assert result.problems == ["asked for GB region 13, the API answered for 4"]


@pytest.mark.parametrize(
    "answer",
    [
        {"error": {"code": "400 Bad Request"}},
        {
            "data": [
                {
                    "from": "2024-05-01T10:30Z",
                    "to": "2024-05-01T10:00Z",
                    "intensity": {"forecast": 1, "actual": None},
                }
            ]
        },
        {"data": [{"from": "2024-05-01T10:30Z", "to": "2024-05-01T11:00Z", "intensity": 5}]},
        {
            "data": [
                {
                    "from": "2024-05-01T10:30Z",
                    "to": "2024-05-01T11:00Z",
                    "intensity": {"forecast": -3, "actual": None},
                }
            ]
        },
    ],
)
def test_gb_malformed_answers_fail(api, answer):
    api.route(r"^/intensity/", Response(200, answer))
    with pytest.raises(FetchError, match="from http://127.0.0.1"):
        GBCarbonIntensitySource(base_url=api.url).fetch(client(), NOW)


def test_gb_empty_answer(api):
    api.route(r"^/intensity/", Response(200, {"data": []}))
    assert GBCarbonIntensitySource(base_url=api.url).fetch(client(), NOW).points == []


@pytest.mark.parametrize(
    ("given", "outward"),
    [("RG10", "RG10"), ("sw1a 1aa", "SW1A"), ("E16AN", "E1"), ("M1 1AE", "M1")],
)
def test_outward_code(given, outward):
    assert outward_code(given) == outward


@pytest.mark.parametrize("bad", ["12345", "", "London", "RG10 9XX 1"])
def test_outward_code_refuses(bad):
    with pytest.raises(ValueError, match="outward code"):
        outward_code(bad)


def test_gb_bad_region_refused():
    with pytest.raises(ValueError, match="1-17"):
        GBCarbonIntensitySource(region_id=18)
    with pytest.raises(ValueError, match="not both"):
        GBCarbonIntensitySource(region_id=1, postcode="RG10")


# -- Electricity Maps ------------------------------------------------------------------------


def test_electricitymaps_history_and_forecast_with_token_header(api):
    h0 = slot(NOW, HOUR) - 2 * HOUR
    api.route(r"/carbon-intensity/history$", Response(200, em_history_answer(h0, [300, 280, 260])))
    api.route(
        r"/carbon-intensity/forecast$", Response(200, em_forecast_answer(h0 + 3 * HOUR, [240, 220]))
    )
    source = ElectricityMapsSource(TOKEN, zone="DE", base_url=api.url)
    result = source.fetch(client(), NOW)
    got = [(p.start_unix_s - h0, p.intensity_g_per_kwh, p.kind) for p in result.points]
    assert got == [
        (0, 300, "measured"),
        (3600, 280, "measured"),
        (7200, 260, "measured"),
        (10800, 240, "forecast"),
        (14400, 220, "forecast"),
    ]
    assert all(p.basis == "lifecycle" for p in result.points)
    for req in api.requests:
        assert req.headers["auth-token"] == TOKEN
        assert req.query == {"zone": "DE"}
        assert TOKEN not in req.path
    assert TOKEN not in repr(source)


def test_electricitymaps_estimated_and_direct_values_are_labelled(api):
    entry = em_entry(
        slot(NOW, HOUR),
        410,
        isEstimated=True,
        estimationMethod="TIME_SLICER_AVERAGE",
        emissionFactorType="direct",
    )
    api.route(r"/history$", Response(200, {"zone": "PL", "history": [entry]}))
    api.route(r"/forecast$", Response(200, em_forecast_answer(NOW, [])))
    (point,) = ElectricityMapsSource(TOKEN, zone="PL", base_url=api.url).fetch(client(), NOW).points
    assert point.basis == "direct"
    assert "estimated (TIME_SLICER_AVERAGE)" in point.source


def test_electricitymaps_rejected_token_is_permanent_and_secret(api):
    api.route(r"/carbon-intensity/", Response(401, {"message": "Invalid auth-token"}))
    with pytest.raises(FetchError) as info:
        ElectricityMapsSource(TOKEN, zone="DE", base_url=api.url).fetch(client(), NOW)
    assert info.value.permanent and info.value.status == 401
    assert "rejected the token" in str(info.value)
    assert TOKEN not in str(info.value)
    assert len(api.requests) == 1  # no retry of a 401


def test_electricitymaps_unknown_zone_is_permanent(api):
    api.route(r"/history$", Response(404, {"status": "error", "message": "Zone 'XX' not found"}))
    with pytest.raises(FetchError) as info:
        ElectricityMapsSource(TOKEN, zone="XX-YY", base_url=api.url).fetch(client(), NOW)
    assert info.value.permanent
    assert "does not know 'XX-YY'" in str(info.value) and "electricitymaps_zone" in str(info.value)


def test_electricitymaps_plan_without_forecast_or_history(api):
    api.route(r"/history$", Response(403, {"message": "not in your plan"}))
    api.route(r"/latest$", Response(200, em_entry(slot(NOW, HOUR), 333)))
    api.route(r"/forecast$", Response(403, {"message": "not in your plan"}))
    source = ElectricityMapsSource(TOKEN, zone="DE", base_url=api.url)
    first = source.fetch(client(), NOW)
    assert [(p.intensity_g_per_kwh, p.kind) for p in first.points] == [(333, "measured")]
    assert any("history is not in this token's plan" in p for p in first.problems)
    assert any("forecast unavailable" in p for p in first.problems)
    api.requests.clear()
    second = source.fetch(client(), NOW)
    assert [r.path.rsplit("/", 1)[-1] for r in api.requests] == ["latest"]  # no re-asking
    assert second.problems == []


def test_electricitymaps_lat_lon_and_dk_zone_codes(api):
    api.route(r"/history$", Response(200, em_history_answer(slot(NOW, HOUR), [50], zone="DK-DK1")))
    api.route(r"/forecast$", Response(200, em_forecast_answer(NOW, [], zone="DK-DK1")))
    source = ElectricityMapsSource(TOKEN, lat_lon=(55.7, 12.6), base_url=api.url)
    result = source.fetch(client(), NOW)
    assert api.requests[0].query == {"lat": "55.7000", "lon": "12.6000"}
    assert source.answered_zone == "DK-DK1"
    assert "DK-DK1" in result.points[0].source


@pytest.mark.parametrize(
    "answer",
    [
        ["not", "an", "object"],
        {"zone": "DE", "history": "nope"},
        {"zone": "DE", "history": [{"carbonIntensity": 10, "datetime": "later"}]},
        {"zone": "DE", "history": [{"carbonIntensity": "NaN", "datetime": "2024-05-01T10:00Z"}]},
    ],
)
def test_electricitymaps_malformed(api, answer):
    api.route(r"/history$", Response(200, answer))
    with pytest.raises(FetchError):
        ElectricityMapsSource(TOKEN, zone="DE", base_url=api.url).fetch(client(), NOW)


def test_electricitymaps_needs_a_zone_or_position():
    with pytest.raises(ValueError):
        ElectricityMapsSource(TOKEN)
    with pytest.raises(ValueError):
        ElectricityMapsSource("", zone="DE")
