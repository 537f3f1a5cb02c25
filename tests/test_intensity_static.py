"""Offline carbon intensity: packaged tables, user values, resolution order, fallback, errors."""

from __future__ import annotations

import csv
import importlib.util
import math
import socket
import sys
import warnings
from pathlib import Path

import pytest

from carbon_callbacks.core.config import ENV_INTENSITY, ENV_ZONE, CarbonConfig, ConfigError
from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.intensity import resolve, static
from carbon_callbacks.core.intensity.resolve import resolve_intensity, validate_zone
from carbon_callbacks.core.intensity.static import (
    StaticIntensityProvider,
    UnknownZoneError,
    UserIntensityProvider,
    known_zones,
    zone_value,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "carbon_callbacks" / "data"
SHARED_DATA = REPO / ".." / "shared" / "data"


def _read_csv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


COUNTRIES = {
    r["alpha2"]: (float(r["g_co2eq_per_kwh"]), int(r["year"]))
    for r in _read_csv("country_intensity.csv")
}
STATES = {
    r["state_code"]: (float(r["g_co2eq_per_kwh"]), int(r["year"]))
    for r in _read_csv("us_state_intensity.csv")
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (ENV_INTENSITY, ENV_ZONE, "CARBON_CALLBACKS_OFFLINE", "CARBON_CALLBACKS_PUE"):
        monkeypatch.delenv(name, raising=False)


def _config(**kwargs) -> CarbonConfig:
    return CarbonConfig(log_dir=None, **kwargs)


# -- packaged tables -------------------------------------------------------------------------


def test_some_country_values_as_published():
    # hand-copied from the reference data (Ember via OWID), so a broken build shows up here
    assert zone_value("DK").intensity_g_per_kwh == pytest.approx(114.41)
    assert zone_value("FR").intensity_g_per_kwh == pytest.approx(41.44)
    assert zone_value("NA").intensity_g_per_kwh == pytest.approx(48.78)  # Namibia, not "n/a"
    assert zone_value("US").year == 2025


def test_every_packaged_row_is_served_with_its_provenance():
    dk, ca = zone_value("DK"), zone_value("US-CA")
    assert (dk.zone, dk.kind, dk.basis) == ("DK", "annual_average", "lifecycle")
    assert "Ember" in dk.source and "Our World in Data" in dk.source
    assert (ca.zone, ca.kind, ca.year) == ("US-CA", "annual_average", 2023)
    assert ca.basis == "direct"  # eGRID output rates count combustion emissions only
    assert "eGRID2023" in ca.source and "STC2ERTA" in ca.source
    for code, (value, year) in COUNTRIES.items():
        assert zone_value(code).intensity_g_per_kwh == value, code
        assert zone_value(code).year == year, code
    for state, (value, _) in STATES.items():
        assert zone_value(f"US-{state}").intensity_g_per_kwh == value, state


def test_us_alone_is_the_country_row_not_egrid():
    assert zone_value("US").intensity_g_per_kwh == COUNTRIES["US"][0]
    assert zone_value("US").basis == "lifecycle"
    assert "US-USA" not in known_zones()
    assert "USA" not in STATES  # the eGRID national row is dropped from the state table


def test_zone_codes_are_case_insensitive():
    assert zone_value("us-ca") == zone_value("US-CA")
    assert zone_value(" dk ") == zone_value("DK")


def test_known_zones_is_exactly_the_tables_plus_world():
    expected = set(COUNTRIES) | {f"US-{s}" for s in STATES} | {"WORLD"}
    assert known_zones() == expected
    assert len(STATES) == 51  # 50 states and DC
    zones = known_zones()
    zones.add("XX")  # a copy: callers cannot change the package's set
    assert "XX" not in known_zones()


def test_tables_are_cached_and_read_only():
    assert static.load_country_table() is static.load_country_table()
    with pytest.raises(TypeError):
        static.load_country_table()["DK"] = None  # type: ignore[index]
    assert static.load_us_state_table()["US-DC"].name == "District of Columbia"


def test_world_zone_chosen_explicitly_is_not_a_fallback():
    estimate = zone_value("world")
    assert estimate.intensity_g_per_kwh == 473.0
    assert estimate.year == 2024
    assert estimate.kind == "annual_average"
    assert not estimate.is_fallback
    assert "Ember Global Electricity Review 2025" in estimate.source


# -- providers -------------------------------------------------------------------------------


def test_static_provider_provenance_and_constant_over_windows():
    provider = StaticIntensityProvider("de")
    assert provider.zone == "DE"
    first = provider.intensity_over(0.0, 3600.0)
    second = provider.intensity_over(1.7e9, 1.7e9 + 60)
    assert first == second
    assert first.intensity_g_per_kwh == COUNTRIES["DE"][0]
    record = first.to_dict()
    assert record["zone"] == "DE" and record["basis"] == "lifecycle"
    assert record["kind"] == "annual_average" and record["year"] == COUNTRIES["DE"][1]
    assert record["start_unix_s"] is None  # an annual average covers no particular window
    assert provider.forecast_over(0.0, 10.0) is None
    assert "DE" in first.describe() and str(COUNTRIES["DE"][1]) in first.describe()


def test_static_provider_refuses_unknown_zone_and_misused_fallback():
    with pytest.raises(UnknownZoneError) as info:
        StaticIntensityProvider("DKK")
    assert isinstance(info.value, ConfigError)
    assert info.value.suggestions[0] == "DK"
    with pytest.raises(ValueError, match="only the WORLD zone"):
        StaticIntensityProvider("DK", fallback=True)


def test_user_provider():
    provider = UserIntensityProvider(250)
    estimate = provider.intensity_over(0, 1)
    assert estimate.intensity_g_per_kwh == 250.0
    assert estimate.zone == "USER"
    assert estimate.kind == "user"
    assert estimate.basis == "unknown"
    labelled = UserIntensityProvider(12.5, zone="dk1", source="my utility bill", basis="direct")
    assert labelled.zone == "DK1"
    assert labelled.intensity_over(0, 1).source == "my utility bill"
    assert labelled.intensity_over(0, 1).basis == "direct"
    assert UserIntensityProvider(0).intensity_over(0, 1).intensity_g_per_kwh == 0.0


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "lots", None])
def test_user_provider_refuses_bad_values(bad):
    with pytest.raises(ConfigError, match="intensity_g_per_kwh"):
        UserIntensityProvider(bad)  # type: ignore[arg-type]


# -- resolution order ------------------------------------------------------------------------


CA, TX, SE = STATES["CA"][0], STATES["TX"][0], COUNTRIES["SE"][0]
BOTH_ENV = {ENV_INTENSITY: "9", ENV_ZONE: "FR"}


@pytest.mark.parametrize(
    ("settings", "env", "zone", "value", "kind", "source_names"),
    [
        # a stated value first, labelled by the zone; then a stated zone; then the environment
        ({"intensity_g_per_kwh": 42.0, "zone": "dk"}, BOTH_ENV, "DK", 42.0, "user", "intensity_g"),
        ({"intensity_g_per_kwh": 10}, {}, "USER", 10.0, "user", "intensity_g_per_kwh"),
        ({"zone": "US-CA"}, BOTH_ENV, "US-CA", CA, "annual_average", "eGRID"),
        ({"zone": "SE"}, {ENV_INTENSITY: "x", ENV_ZONE: "NOWHERE"}, "SE", SE, "annual_average",
         "Ember"),
        ({}, {ENV_INTENSITY: " 123.5 ", ENV_ZONE: "fr"}, "FR", 123.5, "user", ENV_INTENSITY),
        ({}, {ENV_ZONE: "us-tx"}, "US-TX", TX, "annual_average", "eGRID"),
    ],
)  # fmt: skip
def test_resolution_order(settings, env, zone, value, kind, source_names):
    events = EventLog()
    estimate = resolve_intensity(_config(**settings), events, env=env).intensity_over(0, 1)
    assert (estimate.zone, estimate.intensity_g_per_kwh, estimate.kind) == (zone, value, kind)
    assert source_names in estimate.source
    assert events.events == []


def test_the_process_environment_is_read_unless_a_mapping_is_passed(monkeypatch):
    monkeypatch.setenv(ENV_ZONE, "FR")
    assert resolve_intensity(_config(), EventLog()).intensity_over(0, 1).zone == "FR"
    estimate = resolve_intensity(_config(), EventLog(), env={ENV_ZONE: "PL"}).intensity_over(0, 1)
    assert estimate.zone == "PL"


def test_blank_env_vars_count_as_unset(monkeypatch):
    monkeypatch.setenv(ENV_INTENSITY, "  ")
    monkeypatch.setenv(ENV_ZONE, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CarbonCallbacksWarning)
        estimate = resolve_intensity(_config(), EventLog()).intensity_over(0, 1)
    assert estimate.is_fallback


@pytest.mark.parametrize("raw", ["abc", "-5", "nan", "inf"])
def test_bad_env_value_is_refused(monkeypatch, raw):
    monkeypatch.setenv(ENV_INTENSITY, raw)
    with pytest.raises(ConfigError, match=ENV_INTENSITY):
        resolve_intensity(_config(), EventLog())


# -- world fallback --------------------------------------------------------------------------


def test_world_fallback_is_labelled_and_warned_exactly_once():
    events = EventLog()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = resolve_intensity(_config(), events, env={})
        again = resolve_intensity(_config(), events, env={})
    estimate = provider.intensity_over(0, 1)
    assert estimate.intensity_g_per_kwh == 473.0
    assert estimate.zone == "WORLD"
    assert estimate.kind == "fallback" and estimate.is_fallback
    assert estimate.year == 2024 and estimate.basis == "lifecycle"
    assert "fallback" in estimate.source and "location is unknown" in estimate.source
    assert again.intensity_over(0, 1) == estimate
    fallback_events = [e for e in events.events if e.kind == "intensity_fallback"]
    assert len(fallback_events) == 1
    message = fallback_events[0].message
    assert "zone=" in message and ENV_ZONE in message and "473" in message
    ours = [w for w in caught if issubclass(w.category, CarbonCallbacksWarning)]
    assert len(ours) == 1


def test_no_fallback_event_when_a_zone_is_given():
    events = EventLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail the test
        resolve_intensity(_config(zone="WORLD"), events, env={})
        resolve_intensity(_config(zone="GB"), events, env={})
    assert events.events == []


# -- unknown zones ---------------------------------------------------------------------------


def test_unknown_config_zone_suggests_close_match():
    with pytest.raises(ConfigError) as info:
        resolve_intensity(_config(zone="DKK"), EventLog(), env={})
    message = str(info.value)
    assert "'DKK'" in message
    assert "Did you mean 'DK'" in message
    assert "known_zones()" in message and "country_intensity.csv" in message


def test_unknown_env_zone_names_the_variable_and_suggests():
    with pytest.raises(ConfigError) as info:
        resolve_intensity(_config(), EventLog(), env={ENV_ZONE: "US-CAL"})
    message = str(info.value)
    assert ENV_ZONE in message
    assert "'US-CA'" in message


def test_unknown_zone_with_a_value_is_still_refused():
    with pytest.raises(ConfigError, match="Did you mean 'GB'"):
        resolve_intensity(_config(intensity_g_per_kwh=100, zone="UK"), EventLog(), env={})


@pytest.mark.parametrize(
    ("given", "suggested"),
    [("uk", "GB"), ("texas", "US-TX"), ("WV", "US-WV"), ("new york", "US-NY"), ("GER", "DE")],
)
def test_validate_zone_suggestions(given, suggested):
    with pytest.raises(UnknownZoneError) as info:
        validate_zone(given)
    assert info.value.suggestions[0] == suggested
    assert f"Did you mean '{suggested}'" in str(info.value)


def test_validate_zone_without_any_match_still_says_where_to_look():
    with pytest.raises(UnknownZoneError) as info:
        validate_zone("Q9")
    assert info.value.suggestions == []
    assert "Did you mean" not in str(info.value)
    assert "ISO 3166-1 alpha-2" in str(info.value)


def test_validate_zone_returns_canonical_code():
    assert validate_zone("us-ny") == "US-NY"
    assert validate_zone("world") == "WORLD"


# -- live provider hook ----------------------------------------------------------------------


class _FakeLive(StaticIntensityProvider):
    pass


@pytest.fixture
def registry():
    added: list[str] = []

    def register(zone, factory, **kwargs):
        resolve.register_live_provider(zone, factory, **kwargs)
        added.append(zone)

    yield register
    for zone in added:
        resolve.unregister_live_provider(zone)


def test_live_provider_used_only_when_network_allowed(registry):
    calls = []

    def factory(zone, config, events):
        calls.append(zone)
        return _FakeLive(zone)

    registry("GB", factory, description="fake")
    offline = resolve_intensity(_config(zone="GB", offline=True), EventLog(), env={})
    assert calls == []
    assert type(offline) is StaticIntensityProvider
    online = resolve_intensity(_config(zone="GB", offline=False), EventLog(), env={})
    assert calls == ["GB"]
    assert isinstance(online, _FakeLive)
    # an explicit value still wins over a live zone
    user = resolve_intensity(_config(zone="GB", offline=False, intensity_g_per_kwh=5), EventLog())
    assert isinstance(user, UserIntensityProvider) and calls == ["GB"]


def test_live_provider_failure_degrades_to_table_with_one_event(registry):
    def factory(zone, config, events):
        raise RuntimeError("no route to host")

    registry("DE", factory)
    events = EventLog()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = resolve_intensity(_config(zone="DE", offline=False), events, env={})
    assert provider.intensity_over(0, 1) == zone_value("DE")
    assert [e.kind for e in events.events] == ["intensity_live_failed"]
    assert "no route to host" in events.events[0].message
    assert len([w for w in caught if issubclass(w.category, CarbonCallbacksWarning)]) == 1


def test_live_only_zone_uses_its_offline_zone(registry):
    # SE4 (a Swedish bidding zone) is in no table and has no built-in live source
    with pytest.raises(UnknownZoneError):
        validate_zone("SE4")
    with pytest.raises(ConfigError, match="offline_zone"):
        resolve.register_live_provider("SE4", lambda z, c, e: _FakeLive("SE"))
    registry("SE4", lambda z, c, e: _FakeLive("SE"), offline_zone="SE")
    assert validate_zone("se4") == "SE4"
    assert "SE4" in resolve.live_zones()
    events = EventLog()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CarbonCallbacksWarning)
        provider = resolve_intensity(_config(zone="SE4", offline=True), events, env={})
    assert provider.intensity_over(0, 1) == zone_value("SE")
    assert [e.kind for e in events.events] == ["intensity_offline_substitute"]
    assert "SE4" in events.events[0].message and "SE" in events.events[0].message


def test_offline_resolution_opens_no_socket(monkeypatch, registry):
    def forbidden(*args, **kwargs):
        raise AssertionError("a socket was opened while offline=True")

    monkeypatch.setattr(socket, "socket", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    registry("FR", lambda z, c, e: socket.create_connection(("example.org", 443)))
    events = EventLog()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CarbonCallbacksWarning)
        for config, env in [
            (_config(offline=True), {}),
            (_config(offline=True, zone="FR"), {}),
            (_config(offline=True), {ENV_ZONE: "FR"}),
            (_config(offline=True), {ENV_INTENSITY: "300"}),
            (_config(offline=True, intensity_g_per_kwh=1.0), {}),
        ]:
            provider = resolve_intensity(config, events, env=env)
            assert provider.intensity_over(0, 1).intensity_g_per_kwh >= 0
    assert not any(e.kind == "intensity_live_failed" for e in events.events)


# -- the build script ------------------------------------------------------------------------


def _load_build_script():
    name = "build_intensity_tables"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "scripts" / "build_intensity_tables.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="reference data folder not present")
def test_packaged_tables_are_up_to_date():
    build = _load_build_script()
    assert build.main(["--source-dir", str(SHARED_DATA), "--out-dir", str(DATA), "--check"]) == 0


def _write_sources(folder: Path, countries: str, states: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "country_intensity.csv").write_text(countries)
    codes = [f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(51)]  # AA .. BY
    state_rows = "".join(f"{code},state {code.lower()},2.5\n" for code in codes)
    default_states = "state_code,state,g_co2eq_per_kwh\n" + "usa,usa,300\n" + state_rows
    (folder / "us_state_intensity_egrid2023.csv").write_text(states or default_states)


def test_build_script_writes_sorted_tables_and_attribution(tmp_path):
    build = _load_build_script()
    crlf_rows = "alpha2,year,g_co2eq_per_kwh\r\nSE,2025,35.26\r\nDK,2024,100\r\n"
    _write_sources(tmp_path / "src", crlf_rows)
    out = tmp_path / "out"
    assert build.main(["--source-dir", str(tmp_path / "src"), "--out-dir", str(out)]) == 0
    countries = (tmp_path / "out" / "country_intensity.csv").read_text().splitlines()
    assert countries == ["alpha2,year,g_co2eq_per_kwh", "DK,2024,100.0", "SE,2025,35.26"]
    states = list(csv.DictReader((tmp_path / "out" / "us_state_intensity.csv").open()))
    assert len(states) == 51 and all(r["year"] == "2023" for r in states)
    assert all(r["state_code"] != "USA" for r in states)
    assert states[0] == {
        "state_code": "AA",
        "state": "State Aa",
        "g_co2eq_per_kwh": "2.5",
        "year": "2023",
    }
    notes = (tmp_path / "out" / "INTENSITY_SOURCES.md").read_text()
    for needle in ("CC BY 4.0", "Ember", "Our World in Data", "eGRID2023", "STC2ERTA", "473"):
        assert needle in notes
    assert "Modifications" in notes


@pytest.mark.parametrize(
    ("rows", "complaint"),
    [
        ("DK,2024,100\nDK,2025,90\n", "appears twice"),
        ("DK,2024,-1\n", "finite and >= 0"),
        ("DK,2024,nan\n", "finite and >= 0"),
        ("DK,2024,lots\n", "not a number"),
        ("DNK,2024,100\n", "alpha-2"),
        ("DK,24,100\n", "plausible year"),
    ],
)
def test_build_script_refuses_bad_rows(tmp_path, capsys, rows, complaint):
    build = _load_build_script()
    _write_sources(tmp_path, "alpha2,year,g_co2eq_per_kwh\n" + rows)
    assert build.main(["--source-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]) == 2
    assert complaint in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_build_script_refuses_wrong_header_and_missing_states(tmp_path, capsys):
    build = _load_build_script()
    _write_sources(tmp_path / "a", "code,year,value\nDK,2024,100\n")
    assert build.main(["--source-dir", str(tmp_path / "a"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "header" in capsys.readouterr().err
    _write_sources(
        tmp_path / "b",
        "alpha2,year,g_co2eq_per_kwh\nDK,2024,100\n",
        "state_code,state,g_co2eq_per_kwh\nCA,california,179.06\n",
    )
    assert build.main(["--source-dir", str(tmp_path / "b"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "expected 51 states" in capsys.readouterr().err
