"""Location precedence (setting > env > cloud region > opt-in IP > labelled world average), the
cloud-region map, IP geolocation against a loopback service, and the live/offline settings."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fake_intensity_api import FakeApi, Response

from carbon_callbacks.core.config import CarbonConfig as Config
from carbon_callbacks.core.config import ConfigError
from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity.live import LiveIntensityProvider
from carbon_callbacks.core.intensity.location import (
    CLOUD_REGION_ENV_VARS,
    clear_ip_cache,
    cloud_region_location,
    find_cloud_region,
    parse_ip_answer,
)
from carbon_callbacks.core.intensity.resolve import resolve_intensity
from carbon_callbacks.core.intensity.static import known_zones, zone_value

pytestmark = [
    pytest.mark.usefixtures("loopback_only"),
    pytest.mark.filterwarnings("ignore::carbon_callbacks.core.events.CarbonCallbacksWarning"),
]
CSV = Path(__file__).resolve().parents[1] / "carbon_callbacks" / "data" / "cloud_regions.csv"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in (
        *CLOUD_REGION_ENV_VARS,
        "CARBON_CALLBACKS_OFFLINE",
        "CARBON_CALLBACKS_ZONE",
        "CARBON_CALLBACKS_INTENSITY_G_PER_KWH",
        "CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN",
        "http_proxy",
        "HTTP_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    clear_ip_cache()


@pytest.fixture
def ip_api():
    server = FakeApi()
    yield server
    server.close()


def cfg(**kw) -> Config:
    return Config(log_dir=None, **kw)


def zone_of(config, env, events=None):
    provider = resolve_intensity(config, events or EventLog(), env=env)
    try:
        return provider.intensity_over(0, 0)
    finally:
        provider.close()


# -- the packaged map ------------------------------------------------------------------------


def test_every_mapped_zone_is_in_the_tables_and_rows_are_unique():
    rows = list(csv.DictReader(CSV.open(encoding="utf-8")))
    assert len(rows) > 100
    keys = [(r["provider"], r["region"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {r["provider"] for r in rows} == {"aws", "gcp", "azure"}
    zones = known_zones()
    assert all(r["zone"] in zones for r in rows), [r for r in rows if r["zone"] not in zones]
    assert len({r["region"] for r in rows}) == len(rows)  # names never clash across providers


@pytest.mark.parametrize(
    ("name", "zone", "provider"),
    [
        ("eu-west-1", "IE", "aws"),
        ("us-east-1", "US-VA", "aws"),
        ("aws:eu-north-1", "SE", "aws"),
        ("europe-west1", "BE", "gcp"),
        ("gcp/us-central1", "US-IA", "gcp"),
        ("google:europe-west9", "FR", "gcp"),
        ("westeurope", "NL", "azure"),
        ("West Europe", "NL", "azure"),
        ("Sweden Central", "SE", "azure"),
    ],
)
def test_find_cloud_region(name, zone, provider):
    entry = find_cloud_region(name)
    assert entry is not None and (entry.zone, entry.provider) == (zone, provider)


def test_find_cloud_region_unknown_and_wrong_provider():
    assert find_cloud_region("mars-north-1") is None
    assert find_cloud_region("azure:eu-west-1") is None


def test_cloud_env_vars_in_order_and_unknown_values_skipped():
    env = {"AWS_REGION": "nowhere-1", "AWS_DEFAULT_REGION": "eu-west-3", "REGION_NAME": "eastus"}
    found = cloud_region_location(None, env)
    assert found.zone == "FR" and "AWS_DEFAULT_REGION='eu-west-3'" in found.detail
    assert cloud_region_location(None, {}) is None
    with pytest.raises(ConfigError, match="cloud_region='atlantis'"):
        cloud_region_location("atlantis", env)


# -- precedence ------------------------------------------------------------------------------


def test_precedence_setting_then_env_then_cloud_then_fallback():
    env = {"CARBON_CALLBACKS_ZONE": "PL", "AWS_REGION": "eu-west-1"}
    assert zone_of(cfg(zone="SE"), env).zone == "SE"
    assert zone_of(cfg(), env).zone == "PL"
    assert zone_of(cfg(), {"AWS_REGION": "eu-west-1"}).zone == "IE"
    assert zone_of(cfg(cloud_region="europe-west3"), {"AWS_REGION": "eu-west-1"}).zone == "DE"
    fallback = zone_of(cfg(), {})
    assert fallback.zone == "WORLD" and fallback.kind == "fallback"


def test_cloud_region_choice_is_announced_with_how_to_override():
    events = EventLog()
    zone_of(cfg(), {"GOOGLE_CLOUD_REGION": "us-central1"}, events)
    (event,) = events.events
    assert event.kind == "intensity_location"
    assert "US-IA" in event.message and "GOOGLE_CLOUD_REGION='us-central1'" in event.message
    assert "set zone" in event.message


def test_ip_geolocation_only_when_opted_in(ip_api):
    ip_api.route(r"^/json$", Response(200, {"ip": "192.0.2.1", "country": "DK", "city": "Aarhus"}))
    url = f"{ip_api.url}/json"
    assert zone_of(cfg(_endpoints={"ip_geolocation_url": url}), {}).zone == "WORLD"
    assert ip_api.requests == []  # not opted in: never asked
    events = EventLog()
    config = cfg(ip_geolocation=True, _endpoints={"ip_geolocation_url": url})
    assert config.offline is False  # opting in allows the network for the lookup...
    assert config.live_intensity is False  # ...not for live values (DK has a key-less source)
    est = zone_of(config, {}, events)
    assert est.zone == "DK" and est.kind == "annual_average"
    (event,) = [e for e in events.events if e.kind == "intensity_location"]
    assert "IP geolocation" in event.message and "country DK" in event.message
    assert "VPN" in event.message


def test_ip_geolocation_comes_after_the_cloud_region_and_is_cached(ip_api):
    ip_api.route(r"^/json$", Response(200, {"country_code": "US", "region": "California"}))
    url = f"{ip_api.url}/json"
    assert (
        zone_of(
            cfg(ip_geolocation=True, _endpoints={"ip_geolocation_url": url}),
            {"AWS_REGION": "eu-west-2"},
        ).zone
        == "GB"
    )
    assert ip_api.requests == []
    for _ in range(3):
        assert (
            zone_of(cfg(ip_geolocation=True, _endpoints={"ip_geolocation_url": url}), {}).zone
            == "US-CA"
        )
    assert len(ip_api.requests) == 1  # one lookup per process


def test_ip_geolocation_failure_is_cached_and_falls_back_labelled(ip_api):
    ip_api.route(r"^/json$", Response(200, {"org": "no country here"}))
    url = f"{ip_api.url}/json"
    for _ in range(2):
        events = EventLog()
        est = zone_of(cfg(ip_geolocation=True, _endpoints={"ip_geolocation_url": url}), {}, events)
        assert est.kind == "fallback"
        assert "no two-letter country code" in events.events[0].message
    assert len(ip_api.requests) == 1


def test_ip_unknown_country_is_not_used(ip_api):
    ip_api.route(r"^/json$", Response(200, {"country": "ZZ"}))
    est = zone_of(
        cfg(ip_geolocation=True, _endpoints={"ip_geolocation_url": f"{ip_api.url}/json"}), {}
    )
    assert est.kind == "fallback"


@pytest.mark.parametrize(
    ("answer", "country", "region"),
    [
        ({"country": "DK", "region": "Capital Region"}, "DK", "Capital Region"),
        ({"countryCode": "us", "regionName": "Texas", "region": "TX"}, "US", "TX"),
        ({"country_code": "GB", "country": "United Kingdom", "region_code": "ENG"}, "GB", ""),
    ],
)
def test_parse_ip_answer_shapes(answer, country, region):
    found = parse_ip_answer(answer)
    assert found.country == country and found.region == region


def test_us_state_from_region_code(ip_api):
    ip_api.route(r"^/json$", Response(200, {"country_code": "US", "region_code": "WV"}))
    assert zone_of(
        cfg(ip_geolocation=True, _endpoints={"ip_geolocation_url": f"{ip_api.url}/json"}), {}
    ).zone == ("US-WV")


def test_live_source_for_a_located_zone_without_one_degrades(monkeypatch):
    events = EventLog()
    est = zone_of(cfg(live_intensity=True), {"AWS_REGION": "eu-central-1"}, events)
    assert est == zone_value("DE")
    kinds = [e.kind for e in events.events]
    assert kinds == ["intensity_location", "intensity_live_unavailable"]


# -- settings --------------------------------------------------------------------------------


def test_offline_default_follows_what_is_asked_for(monkeypatch):
    assert cfg().offline is True
    assert cfg(zone="DK1").offline is True
    assert cfg(live_intensity=True, zone="DK1").offline is False
    assert cfg(live_intensity=True, zone="DK1", offline=True).offline is True
    monkeypatch.setenv("CARBON_CALLBACKS_OFFLINE", "1")
    assert cfg(live_intensity=True, zone="DK1").offline is True
    monkeypatch.setenv("CARBON_CALLBACKS_OFFLINE", "0")
    assert cfg(zone="DK1").offline is False


def test_key_less_zone_goes_live_when_the_network_is_allowed(ip_api):
    ip_api.route(r"^/intensity/", Response(200, {"data": []}))
    config = cfg(zone="GB", offline=False, _endpoints={"gb_base_url": ip_api.url})
    provider = resolve_intensity(config, EventLog(), env={})
    try:
        assert isinstance(provider, LiveIntensityProvider)
        assert provider.source.name == "gb"
    finally:
        provider.close()
    static = resolve_intensity(cfg(zone="GB", offline=False, live_intensity=False), EventLog())
    assert not isinstance(static, LiveIntensityProvider)


def test_gb_settings_imply_gb_and_refuse_contradictions():
    assert cfg(gb_postcode="RG10").zone == "GB"
    assert cfg(gb_region=13).zone == "GB"
    with pytest.raises(ConfigError, match="for zone 'GB'"):
        cfg(gb_region=3, zone="FR")
    with pytest.raises(ConfigError, match="not both"):
        cfg(gb_region=3, gb_postcode="RG10")
    with pytest.raises(ConfigError, match="1-17"):
        cfg(gb_region=0)
    with pytest.raises(ConfigError, match="outward"):
        cfg(gb_postcode="Reading")


def test_token_from_environment_is_masked(monkeypatch):
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN", "env-token-abcdef123")
    config = cfg()
    assert config.electricitymaps_token == "env-token-abcdef123"
    assert "env-token-abcdef123" not in repr(config)
    assert config.to_dict()["electricitymaps_token"] == "<redacted>"
    assert cfg(electricitymaps_token=None).to_dict()["electricitymaps_token"] == "<redacted>"
    monkeypatch.delenv("CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN")
    assert cfg().to_dict()["electricitymaps_token"] is None


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"electricitymaps_lat_lon": (91, 0)}, "outside"),
        ({"electricitymaps_lat_lon": "55,12"}, "(latitude, longitude)"),
        ({"electricitymaps_lat_lon": (55, 12), "electricitymaps_zone": "DK-DK1"}, "not both"),
        ({"_endpoints": {"gb_base_url": "ftp://x"}}, "https://"),
        (
            {"_endpoints": {"energidataservice_base_url": "https://user:pw@example.org"}},
            "credentials",
        ),
        ({"ip_geolocation": "yes"}, "True or False"),
        ({"cloud_region": ""}, "region name"),
    ],
)
def test_bad_location_and_provider_settings(settings, needle):
    with pytest.raises(ConfigError) as info:
        cfg(**settings)
    assert needle in str(info.value)


def test_loopback_http_is_accepted_for_tests_only():
    assert (
        cfg(_endpoints={"gb_base_url": "http://127.0.0.1:8080/"}).endpoints.gb_base_url
        == "http://127.0.0.1:8080"
    )


def test_live_settings_unused_because_live_is_off_are_named():
    events = EventLog()
    est = zone_of(
        cfg(zone="GB", gb_postcode="RG10", offline=False, live_intensity=False), {}, events
    )
    assert est == zone_value("GB")
    (event,) = events.events
    assert event.kind == "intensity_live_offline"
    assert "live_intensity=False: gb_postcode not used" in event.message


def test_a_stated_value_wins_over_live_and_says_so():
    events = EventLog()
    est = zone_of(cfg(zone="DK1", live_intensity=True, intensity_g_per_kwh=42.0), {}, events)
    assert est.intensity_g_per_kwh == 42.0 and est.kind == "user"
    assert [e.kind for e in events.events] == ["intensity_live_unavailable"]
