"""Choose the carbon-intensity provider for a run.

Precedence, first match wins:

1. ``config.intensity_g_per_kwh``: a user-stated value (labelled with ``config.zone`` if given);
2. ``config.zone``: the zone's provider (country ``"DK"``, US state ``"US-CA"``, ``"WORLD"``);
3. ``$CARBON_CALLBACKS_INTENSITY_G_PER_KWH`` (labelled with ``$CARBON_CALLBACKS_ZONE`` if set);
4. ``$CARBON_CALLBACKS_ZONE``;
5. the world average, labelled as a fallback, with one ``intensity_fallback`` warning event that
   says how to set the zone. (Opt-in IP geolocation, a later feature, would slot in before this.)

An unknown zone, from a setting or the environment, is refused with :class:`ConfigError` (an
:class:`~carbon_callbacks.core.intensity.static.UnknownZoneError`) that suggests close matches.

Live providers (Energi Data Service for DK1/DK2, the GB Carbon Intensity API, Electricity Maps)
plug in through :func:`register_live_provider`. A registered factory is called only when the run
allows the network (``config.offline`` is False); with ``offline=True`` nothing here, nor any
factory, is called that could open a socket. A factory must not block: it returns a provider that
fetches on its own background thread. If it raises, the run degrades to the packaged annual
average with one warning event. This module itself opens no connection.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from carbon_callbacks.core.config import ENV_INTENSITY, ENV_ZONE, CarbonConfig, ConfigError
from carbon_callbacks.core.config import normalise_zone as _normalise_zone
from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity.base import IntensityProvider
from carbon_callbacks.core.intensity.static import (
    WORLD_INTENSITY_G_PER_KWH,
    WORLD_YEAR,
    StaticIntensityProvider,
    UserIntensityProvider,
    known_zones,
    unknown_zone_error,
)

#: Event kinds this module records (all with source ``"intensity"``).
EVENT_FALLBACK = "intensity_fallback"
EVENT_LIVE_FAILED = "intensity_live_failed"
EVENT_OFFLINE_SUBSTITUTE = "intensity_offline_substitute"
EVENT_SOURCE = "intensity"

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
    """Zones that have a registered live provider."""
    with _LIVE_LOCK:
        return set(_LIVE)


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


def _zone_provider(zone: str, config: CarbonConfig, events: EventLog) -> IntensityProvider:
    """The provider for a validated zone: live when allowed and registered, else the table."""
    with _LIVE_LOCK:
        spec = _LIVE.get(zone)
    if spec is not None and config.offline is False:
        try:
            return spec.factory(zone, config, events)
        except Exception as exc:  # noqa: BLE001 - a live source must never stop the run
            events.record(
                EVENT_LIVE_FAILED,
                f"live carbon intensity for {zone} could not start ({exc}); "
                "using the packaged annual average instead",
                EVENT_SOURCE,
            )
    if spec is not None and spec.offline_zone is not None:
        events.record(
            EVENT_OFFLINE_SUBSTITUTE,
            f"zone {zone} has only a live source; using the annual average of "
            f"{spec.offline_zone} from the packaged table"
            + (" (offline=True)" if config.offline is not False else ""),
            EVENT_SOURCE,
        )
        return StaticIntensityProvider(spec.offline_zone)
    return StaticIntensityProvider(zone)


def _record_fallback_once(events: EventLog) -> None:
    if any(e.kind == EVENT_FALLBACK for e in events.events):
        return
    events.record(
        EVENT_FALLBACK,
        f"no location given: using the world average {WORLD_INTENSITY_G_PER_KWH:g} gCO2eq/kWh "
        f"({WORLD_YEAR}), which can be several times off for your grid. Set zone='DK' "
        "(ISO 3166-1 alpha-2 country) or zone='US-CA' (US state), or the environment variable "
        f"{ENV_ZONE}; or give the value with intensity_g_per_kwh / {ENV_INTENSITY}",
        EVENT_SOURCE,
    )


def resolve_intensity(
    config: CarbonConfig, events: EventLog, env: Mapping[str, str] = os.environ
) -> IntensityProvider:
    """The intensity provider for a run, by the precedence in the module docstring.

    Args:
        config: the run's settings (``intensity_g_per_kwh``, ``zone``, ``offline``).
        events: where the fallback warning (at most one per log) and degradations go.
        env: environment variables (default ``os.environ``; tests pass a dict).

    Raises:
        ConfigError: an unknown zone, or an unparsable ``$CARBON_CALLBACKS_INTENSITY_G_PER_KWH``.
    """
    if config.intensity_g_per_kwh is not None:
        label = validate_zone(config.zone) if config.zone is not None else None
        return UserIntensityProvider(
            config.intensity_g_per_kwh, label, source="user-stated value (intensity_g_per_kwh)"
        )
    if config.zone is not None:
        return _zone_provider(validate_zone(config.zone), config, events)
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
        return _zone_provider(zone, config, events)
    _record_fallback_once(events)
    return StaticIntensityProvider.world_fallback()
