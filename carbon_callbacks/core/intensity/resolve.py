"""Choose the carbon-intensity provider for a run.

Precedence, first match wins:

1. ``config.intensity_g_per_kwh``: a user-stated value (labelled with ``config.zone`` if given);
2. ``config.zone`` (``gb_region``/``gb_postcode`` imply ``"GB"``): the zone's provider
   (country ``"DK"``, US state ``"US-CA"``, grid zone ``"DK1"``, ``"WORLD"``);
3. ``$CARBON_CALLBACKS_INTENSITY_G_PER_KWH`` (labelled with ``$CARBON_CALLBACKS_ZONE`` if set);
4. ``$CARBON_CALLBACKS_ZONE``;
5. the cloud region: the ``cloud_region`` setting, else ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
   ``GOOGLE_CLOUD_REGION``, ``CLOUD_RUN_REGION``, ``FUNCTION_REGION``, ``REGION_NAME`` through the
   packaged map (no metadata server is called); announced with one event;
6. IP geolocation, only with ``ip_geolocation=True`` and the network allowed (one lookup per
   process, short timeouts, the result announced);
7. the world average, labelled as a fallback, with one ``intensity_fallback`` warning event that
   says how to set the zone.

An unknown zone, from a setting or the environment, is refused with :class:`ConfigError` (an
:class:`~carbon_callbacks.core.intensity.static.UnknownZoneError`) that suggests close matches.

**Live values** (see ``docs/intensity.md``). The zone's live provider is used only when the run
allows the network (``config.offline`` is False: the default only when ``live_intensity`` or
``ip_geolocation`` asks for it) and ``live_intensity`` is not False:

- Energi Data Service for ``DK1``, ``DK2`` and ``DK``, the GB Carbon Intensity API for ``GB``
  (both key-less, built in);
- any zone with an Electricity Maps token (``electricitymaps_token`` or
  ``$CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN``);
- a provider registered with :func:`register_live_provider` (it wins over the built-in one).

``live_intensity=True`` (or a provider name) with a zone set explicitly and no live source for it
is refused at construction; for a zone found from the cloud region or IP, it degrades to the
annual average with one event. With ``offline=True`` nothing here, nor any factory, is called
that could open a socket, and any live setting that is therefore unused is named in one event. A
factory must not block: it returns a provider that fetches on its own background thread. If it
raises, the run degrades to the packaged annual average with one warning event. This module
itself opens no connection, except the opt-in IP lookup.

**Put off until start.** With ``defer_live=True`` (the tracker always passes it, so that
nothing starts before ``start()``) a live provider is returned as a
:class:`~carbon_callbacks.core.intensity.ranks.DeferredLiveProvider`: settings are checked and a
built-in source is built now (so a bad setting is still refused at construction), but nothing
starts, fetches or opens a socket until the tracker activates it (on rank 0 only when ranks
combine). A registered factory is then called at activation, and if it raises (even
:class:`ConfigError`) the run degrades to the annual average with one ``intensity_live_failed``
event. The opt-in IP geolocation lookup is put off the same way.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from carbon_callbacks.core.config import ENV_INTENSITY, ENV_ZONE, CarbonConfig, ConfigError
from carbon_callbacks.core.config import normalise_zone as _normalise_zone
from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity.base import IntensityProvider
from carbon_callbacks.core.intensity.http import FetchError, HttpClient
from carbon_callbacks.core.intensity.ranks import DeferredLiveProvider
from carbon_callbacks.core.intensity.static import (
    WORLD_INTENSITY_G_PER_KWH,
    WORLD_YEAR,
    StaticIntensityProvider,
    UserIntensityProvider,
    known_zones,
    load_us_state_table,
    unknown_zone_error,
)

#: Event kinds this module records (all with source ``"intensity"``).
EVENT_FALLBACK = "intensity_fallback"
EVENT_LIVE_FAILED = "intensity_live_failed"
EVENT_OFFLINE_SUBSTITUTE = "intensity_offline_substitute"
EVENT_LIVE_UNAVAILABLE = "intensity_live_unavailable"
EVENT_LIVE_OFFLINE = "intensity_live_offline"
EVENT_LOCATION = "intensity_location"
EVENT_SOURCE = "intensity"

#: Key-less live zones built in: zone -> (provider, packaged zone used offline or ``None``).
BUILTIN_LIVE_ZONES = {
    "DK": ("energidataservice", None),
    "DK1": ("energidataservice", "DK"),
    "DK2": ("energidataservice", "DK"),
    "GB": ("gb", None),
}

#: ``factory(zone, config, events) -> provider``; must not block or fetch on the caller's thread.
LiveProviderFactory = Callable[[str, CarbonConfig, EventLog], IntensityProvider]


@dataclass(frozen=True)
class LiveProviderSpec:
    """A live provider registered for one zone.

    Attributes:
        zone: the zone it serves (``"DK1"``, ``"GB"``...).
        factory: builds the provider (called only when the network is allowed).
        offline_zone: packaged-table zone used instead when offline, for zones the tables do not
            know (``"DK1"`` -> ``"DK"``); ``None`` when the zone itself is in the tables.
        description: one line for messages, e.g. ``"Energi Data Service CO2Emis, 5 min"``.
    """

    zone: str
    factory: LiveProviderFactory
    offline_zone: str | None = None
    description: str = ""


_LIVE: dict[str, LiveProviderSpec] = {}
_LIVE_LOCK = threading.Lock()


def register_live_provider(
    zone: str,
    factory: LiveProviderFactory,
    *,
    offline_zone: str | None = None,
    description: str = "",
) -> None:
    """Register (or replace) the live provider for ``zone``; the zone becomes valid.

    Raises:
        ConfigError: ``offline_zone`` is not in the packaged tables, or the zone is not in them
            and no ``offline_zone`` is given (an offline run must still have a value).
    """
    code = _normalise_zone(zone)
    static = known_zones()
    if offline_zone is not None:
        offline_zone = _normalise_zone(offline_zone)
        if offline_zone not in static:
            raise ConfigError(f"offline_zone {offline_zone!r} is not in the packaged tables")
    elif code not in static:
        raise ConfigError(f"live zone {code!r} is not in the packaged tables: give offline_zone")
    with _LIVE_LOCK:
        _LIVE[code] = LiveProviderSpec(code, factory, offline_zone, description)


def unregister_live_provider(zone: str) -> None:
    """Remove the live provider for ``zone`` (no error if none)."""
    with _LIVE_LOCK:
        _LIVE.pop(_normalise_zone(zone), None)


def live_zones() -> set[str]:
    """Zones that have a live provider: registered ones and the built-in key-less ones."""
    with _LIVE_LOCK:
        return set(_LIVE) | set(BUILTIN_LIVE_ZONES)


def validate_zone(zone: str, *, setting: str = "zone") -> str:
    """Normalise ``zone`` and check that a table or live provider knows it.

    Use at construction time, before any epoch runs.

    Args:
        zone: e.g. ``"dk"``, ``"US-CA"``, ``"world"``.
        setting: how the user gave it, for the message (``"zone"`` or an environment variable).

    Returns:
        The canonical code (``"DK"``).

    Raises:
        ConfigError: malformed or unknown (with close matches and where to find valid codes).
    """
    known = known_zones() | live_zones()
    try:
        code = _normalise_zone(zone)
    except ConfigError:
        raise unknown_zone_error(zone, known, setting) from None
    if code not in known:
        raise unknown_zone_error(zone, known, setting)
    return code


def _env_text(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def _env_intensity_g_per_kwh(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"environment variable {ENV_INTENSITY}={raw!r} must be a finite number >= 0 "
            "(gCO2eq/kWh)"
        )
    return value


def _static_for(
    zone: str, spec: LiveProviderSpec | None, config: CarbonConfig, events: EventLog
) -> IntensityProvider:
    offline_zone = spec.offline_zone if spec is not None else None
    if spec is None and zone in BUILTIN_LIVE_ZONES:
        offline_zone = BUILTIN_LIVE_ZONES[zone][1]
    if offline_zone is not None:
        events.record(
            EVENT_OFFLINE_SUBSTITUTE,
            f"zone {zone} has only a live source; using the annual average of "
            f"{offline_zone} from the packaged table"
            + (" (offline=True)" if config.offline is not False else ""),
            EVENT_SOURCE,
        )
        return StaticIntensityProvider(offline_zone)
    return StaticIntensityProvider(zone)


def _zone_provider(
    zone: str,
    config: CarbonConfig,
    events: EventLog,
    *,
    explicit: bool = True,
    defer_live: bool = False,
) -> IntensityProvider:
    """The provider for a validated zone: live when allowed and available, else the table.

    Args:
        explicit: the zone came from a setting or ``$CARBON_CALLBACKS_ZONE`` (a live request
            that cannot be met is then refused, not degraded).
        defer_live: return a live provider not started yet (see the module docstring).
    """
    with _LIVE_LOCK:
        spec = _LIVE.get(zone)
    if config.offline is not False or config.live_intensity is False:
        return _static_for(zone, spec, config, events)
    choice, reason = _live_choice(zone, spec, config)
    if choice is None:
        if config.live_intensity:
            if explicit:
                raise ConfigError(reason)
            events.record(
                EVENT_LIVE_UNAVAILABLE, f"{reason}; using the annual average", EVENT_SOURCE
            )
        return _static_for(zone, spec, config, events)
    if isinstance(choice, LiveProviderSpec) and defer_live:
        return DeferredLiveProvider(
            zone,
            partial(_start_registered, choice, zone, config),
            StaticIntensityProvider(choice.offline_zone or zone),
            choice.description,
        )
    try:
        if isinstance(choice, LiveProviderSpec):
            return choice.factory(zone, config, events)
        return live_provider(choice, zone, config, events, defer=defer_live)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a live source must never stop the run
        return _live_failed(zone, exc, spec, config, events)


def _live_failed(
    zone: str,
    exc: Exception,
    spec: LiveProviderSpec | None,
    config: CarbonConfig,
    events: EventLog,
) -> IntensityProvider:
    """Record that the zone's live provider could not start; its packaged value instead."""
    events.record(
        EVENT_LIVE_FAILED,
        f"live carbon intensity for {zone} could not start ({exc}); "
        "using the packaged annual average instead",
        EVENT_SOURCE,
    )
    return _static_for(zone, spec, config, events)


def _start_registered(
    spec: LiveProviderSpec, zone: str, config: CarbonConfig, events: EventLog
) -> IntensityProvider:
    """Call a registered factory late (a deferred provider's activation); never raises."""
    try:
        return spec.factory(zone, config, events)
    except Exception as exc:  # noqa: BLE001 - at activation even a ConfigError only degrades
        return _live_failed(zone, exc, spec, config, events)


def _live_choice(
    zone: str, spec: LiveProviderSpec | None, config: CarbonConfig
) -> tuple[str | LiveProviderSpec | None, str]:
    """What serves ``zone`` live under the settings: a built-in provider's name, a registered
    spec, or ``None`` and why not."""
    mode = config.live_intensity
    builtin = BUILTIN_LIVE_ZONES.get(zone, (None, None))[0]
    if mode in ("energidataservice", "gb"):
        if builtin != mode:
            served = sorted(z for z, (p, _) in BUILTIN_LIVE_ZONES.items() if p == mode)
            return None, (
                f"live_intensity={mode!r} serves zone(s) {served}, not zone {zone!r}: set the "
                "zone accordingly, or live_intensity=True to pick the zone's own source"
            )
        return mode, ""
    if mode != "electricitymaps":
        if spec is not None:
            return spec, ""
        if builtin is not None:
            return builtin, ""
    if not config.electricitymaps_token:
        return None, (
            f"no live carbon intensity for zone {zone!r} without a key: Energi Data Service "
            "serves DK, DK1 and DK2 and the GB Carbon Intensity API serves GB; for other zones "
            "set electricitymaps_token (or $CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN), or leave "
            "live_intensity unset to use the annual average"
        )
    if zone == "WORLD":
        return None, "zone 'WORLD' has no live source; give the zone of your electricity"
    if (
        zone.startswith("US-")
        and config.electricitymaps_zone is None
        and config.electricitymaps_lat_lon is None
    ):
        return None, (
            f"Electricity Maps names US grids by balancing authority, not by state: for zone "
            f"{zone!r} set electricitymaps_zone (e.g. 'US-CAL-CISO') or electricitymaps_lat_lon"
        )
    return "electricitymaps", ""


def build_live_source(
    choice: str, zone: str | None, config: CarbonConfig
) -> tuple[Any, str | None]:
    """The :class:`~carbon_callbacks.core.intensity.live.LiveSource` of a built-in provider and
    the packaged zone for its fallback (``None``: the world average).

    Args:
        choice: ``"energidataservice"``, ``"gb"`` or ``"electricitymaps"``.
        zone: our zone code (``None`` only for Electricity Maps with its own zone or position).
    """
    if choice == "energidataservice":
        from carbon_callbacks.core.intensity.energidataservice import EnergiDataServiceSource

        assert zone is not None
        source = EnergiDataServiceSource(zone, base_url=config.endpoints.energidataservice_base_url)
        return source, BUILTIN_LIVE_ZONES[zone][1] or zone
    if choice == "gb":
        from carbon_callbacks.core.intensity.gb import GBCarbonIntensitySource

        source = GBCarbonIntensitySource(
            region_id=config.gb_region,
            postcode=config.gb_postcode,
            base_url=config.endpoints.gb_base_url,
        )
        return source, "GB"
    if choice == "electricitymaps":
        from carbon_callbacks.core.intensity.electricitymaps import (
            ElectricityMapsSource,
            electricitymaps_zone,
        )

        if not config.electricitymaps_token:
            raise ConfigError("Electricity Maps needs electricitymaps_token")
        em_zone = config.electricitymaps_zone
        if em_zone is None and config.electricitymaps_lat_lon is None and zone is not None:
            em_zone = electricitymaps_zone(zone)
        source = ElectricityMapsSource(
            config.electricitymaps_token,
            zone=em_zone,
            lat_lon=config.electricitymaps_lat_lon if em_zone is None else None,
            label=em_zone or zone,
            base_url=config.endpoints.electricitymaps_base_url,
        )
        static_zone = (BUILTIN_LIVE_ZONES.get(zone, (None, None))[1] or zone) if zone else None
        return source, static_zone
    raise ValueError(f"unknown live provider {choice!r}")


def live_provider(
    choice: str,
    zone: str | None,
    config: CarbonConfig,
    events: EventLog,
    *,
    defer: bool = False,
) -> IntensityProvider:
    """A built-in live provider, refreshing on its own thread (see :func:`build_live_source`).

    Args:
        defer: build the source now but start nothing: a
            :class:`~carbon_callbacks.core.intensity.ranks.DeferredLiveProvider`.
    """
    source, static_zone = build_live_source(choice, zone, config)
    fallback = (
        StaticIntensityProvider(static_zone)
        if static_zone is not None
        else StaticIntensityProvider.world_fallback()
    )
    offline = config.offline is not False
    if defer:
        starter = partial(_start_live_source, source, fallback, offline)
        return DeferredLiveProvider(source.zone, starter, fallback, source.description)
    return _start_live_source(source, fallback, offline, events)


def _start_live_source(
    source: Any, fallback: IntensityProvider, offline: bool, events: EventLog
) -> IntensityProvider:
    """A :class:`~carbon_callbacks.core.intensity.live.LiveIntensityProvider` for ``source``,
    its refresh thread started."""
    from carbon_callbacks.core.intensity.live import LiveIntensityProvider

    return LiveIntensityProvider(source, fallback, events, client=HttpClient(offline=offline))


def live_source_for(config: CarbonConfig) -> Any:
    """The live source for ``config.zone`` (or its Electricity Maps zone/position), for one-off
    fetches such as :func:`~carbon_callbacks.core.intensity.schedule.best_start`.

    Raises:
        ConfigError: no zone, an unknown zone, or no live source for it under the settings.
    """
    if config.zone is None:
        if config.electricitymaps_token and (
            config.electricitymaps_zone is not None or config.electricitymaps_lat_lon is not None
        ):
            return build_live_source("electricitymaps", None, config)[0]
        raise ConfigError(
            "give the zone to plan for: zone='DK1', 'DK2', 'DK' or 'GB' (no key needed), or a "
            "zone with an Electricity Maps token"
        )
    zone = validate_zone(config.zone)
    with _LIVE_LOCK:
        spec = _LIVE.get(zone)
    choice, reason = _live_choice(zone, spec, config)
    if choice is None:
        raise ConfigError(reason)
    if isinstance(choice, LiveProviderSpec):
        raise ConfigError(
            f"zone {zone!r} is served by a registered custom provider; planning uses the "
            "built-in providers only (set live_intensity to one of them)"
        )
    return build_live_source(choice, zone, config)[0]


def _note_unused_live_settings(config: CarbonConfig, events: EventLog) -> None:
    """One event naming live settings the run will not use (offline, or live_intensity=False):
    never silently."""
    offline = config.offline is not False
    if not offline and config.live_intensity is not False:
        return
    candidates = [
        (f"live_intensity={config.live_intensity!r}", bool(config.live_intensity)),
        ("electricitymaps_token", bool(config.electricitymaps_token)),
        ("electricitymaps_zone", config.electricitymaps_zone is not None),
        ("electricitymaps_lat_lon", config.electricitymaps_lat_lon is not None),
        ("gb_region", config.gb_region is not None),
        ("gb_postcode", config.gb_postcode is not None),
    ]
    if offline:
        candidates.append(("ip_geolocation=True", config.ip_geolocation))
    unused = [name for name, used in candidates if used]
    if not unused:
        return
    why = (
        "offline (offline=True or $CARBON_CALLBACKS_OFFLINE)" if offline else "live_intensity=False"
    )
    events.record(
        EVENT_LIVE_OFFLINE,
        f"{why}: {', '.join(unused)} not used"
        + (" and no network is touched" if offline else "")
        + "; the packaged annual average applies",
        EVENT_SOURCE,
    )


def _us_states_by_name() -> dict[str, str]:
    return {entry.name.upper(): zone for zone, entry in load_us_state_table().items()}


def _locate(
    config: CarbonConfig, events: EventLog, env: Mapping[str, str]
) -> tuple[str | None, str]:
    """Zone from the cloud region, then opt-in IP geolocation; else ``(None, why)``."""
    from carbon_callbacks.core.intensity.location import cloud_region_location, ip_location

    location = cloud_region_location(config.cloud_region, env)
    if location is not None:
        events.record(
            EVENT_LOCATION,
            f"zone {location.zone} taken from the cloud region, {location.detail}; if this "
            "machine is not in that region, set zone (or $CARBON_CALLBACKS_ZONE)",
            EVENT_SOURCE,
        )
        return location.zone, ""
    if not config.ip_geolocation:
        return None, ""
    if config.offline is not False:
        return None, "ip_geolocation=True was not used because the run is offline"
    try:
        found = ip_location(
            config.endpoints.ip_geolocation_url,
            known_zones(),
            _us_states_by_name(),
            offline=False,
        )
    except FetchError as exc:
        return None, f"IP geolocation failed ({exc})"
    events.record(
        EVENT_LOCATION,
        f"zone {found.zone} from IP geolocation: {found.detail}. This locates where your "
        "network meets the internet (VPN, proxy, campus), not necessarily this machine; set "
        "zone to be sure",
        EVENT_SOURCE,
    )
    return found.zone, ""


def _record_fallback_once(events: EventLog, reason: str = "") -> None:
    if any(e.kind == EVENT_FALLBACK for e in events.events):
        return
    events.record(
        EVENT_FALLBACK,
        (f"{reason}; " if reason else "")
        + f"no location given: using the world average {WORLD_INTENSITY_G_PER_KWH:g} gCO2eq/kWh "
        f"({WORLD_YEAR}), which can be several times off for your grid. Set zone='DK' "
        "(ISO 3166-1 alpha-2 country) or zone='US-CA' (US state), or the environment variable "
        f"{ENV_ZONE}; or give the value with intensity_g_per_kwh / {ENV_INTENSITY}",
        EVENT_SOURCE,
    )


def resolve_intensity(
    config: CarbonConfig,
    events: EventLog,
    env: Mapping[str, str] = os.environ,
    *,
    defer_live: bool = False,
) -> IntensityProvider:
    """The intensity provider for a run, by the precedence in the module docstring.

    Args:
        config: the run's settings (``intensity_g_per_kwh``, ``zone``, ``offline``, the live
            and location settings).
        events: where the fallback warning (at most one per log) and degradations go.
        env: environment variables (default ``os.environ``; tests pass a dict).
        defer_live: return a live provider as a
            :class:`~carbon_callbacks.core.intensity.ranks.DeferredLiveProvider` that starts
            only when activated (for data-parallel ranks: rank 0 activates it, no other rank).

    Raises:
        ConfigError: an unknown zone, or an unparsable ``$CARBON_CALLBACKS_INTENSITY_G_PER_KWH``.
    """
    _note_unused_live_settings(config, events)
    if config.intensity_g_per_kwh is not None:
        label = validate_zone(config.zone) if config.zone is not None else None
        if config.live_intensity and config.offline is False:
            events.record(
                EVENT_LIVE_UNAVAILABLE,
                f"intensity_g_per_kwh={config.intensity_g_per_kwh:g} is given, so "
                f"live_intensity={config.live_intensity!r} is not used",
                EVENT_SOURCE,
            )
        return UserIntensityProvider(
            config.intensity_g_per_kwh, label, source="user-stated value (intensity_g_per_kwh)"
        )
    if config.zone is not None:
        return _zone_provider(validate_zone(config.zone), config, events, defer_live=defer_live)
    env_intensity = _env_text(env, ENV_INTENSITY)
    env_zone = _env_text(env, ENV_ZONE)
    zone = validate_zone(env_zone, setting=ENV_ZONE) if env_zone is not None else None
    if env_intensity is not None:
        return UserIntensityProvider(
            _env_intensity_g_per_kwh(env_intensity),
            zone,
            source=f"user-stated value (environment variable {ENV_INTENSITY})",
        )
    if zone is not None:
        return _zone_provider(zone, config, events, defer_live=defer_live)
    if defer_live and _asks_ip(config, env):  # the lookup is a request: made at start()
        return DeferredLiveProvider(
            "WORLD",
            lambda at_start: _located_provider(config, at_start, env, defer_live=False),
            StaticIntensityProvider.world_fallback(),
            "the zone from IP geolocation",
        )
    return _located_provider(config, events, env, defer_live=defer_live)


def _asks_ip(config: CarbonConfig, env: Mapping[str, str]) -> bool:
    """True when locating the run will ask the opt-in IP geolocation service."""
    from carbon_callbacks.core.intensity.location import cloud_region_location

    return (
        config.ip_geolocation
        and config.offline is False
        and cloud_region_location(config.cloud_region, env) is None
    )


def _located_provider(
    config: CarbonConfig, events: EventLog, env: Mapping[str, str], *, defer_live: bool
) -> IntensityProvider:
    """The provider when no zone is given: from the cloud region or IP, else the fallback."""
    located, why = _locate(config, events, env)
    if located is not None:
        return _zone_provider(
            validate_zone(located), config, events, explicit=False, defer_live=defer_live
        )
    if (
        (config.electricitymaps_zone is not None or config.electricitymaps_lat_lon is not None)
        and config.electricitymaps_token
        and config.offline is False
        and config.live_intensity is not False
    ):
        return live_provider("electricitymaps", None, config, events, defer=defer_live)
    _record_fallback_once(events, why)
    return StaticIntensityProvider.world_fallback()
