"""Where the electricity is drawn, when the user did not say: cloud region, then opt-in IP lookup.

The full precedence lives in :mod:`~carbon_callbacks.core.intensity.resolve`: an explicit zone or
country setting, then ``$CARBON_CALLBACKS_ZONE``, then this module:

1. **cloud region**: the ``cloud_region`` setting, else the first of
   :data:`CLOUD_REGION_ENV_VARS` that is set, looked up in the packaged
   ``data/cloud_regions.csv`` (AWS, Google Cloud and Azure region names -> US state or country).
   Only environment variables are read; no metadata server is ever called. A laptop with
   ``AWS_DEFAULT_REGION`` set for the AWS CLI is not in that region, so the choice is announced
   with how to override it;
2. **IP geolocation**, only with ``ip_geolocation=True`` and the network allowed: one GET of
   ``ip_geolocation_url`` (1 s to connect, 2 s to answer, no retry), cached for the process
   (answers and failures alike, so parallel trackers make one lookup), and the result is
   announced. It locates the network's exit to the internet (VPN, campus NAT, proxy), not the
   machine, and sends the public IP address to that service.

Nothing here falls back to a country silently: when neither applies the caller uses the world
average, labelled as a fallback.
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from carbon_callbacks.core.config import ConfigError
from carbon_callbacks.core.intensity.http import FetchError, HttpClient

CLOUD_TABLE = "cloud_regions.csv"
#: Environment variables that name the cloud region, in the order they are read.
CLOUD_REGION_ENV_VARS = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "GOOGLE_CLOUD_REGION",
    "CLOUD_RUN_REGION",
    "FUNCTION_REGION",
    "REGION_NAME",
)
#: Default IP geolocation service (answers ``{"country": "DK", "region": ..., ...}``).
IP_GEOLOCATION_URL = "https://ipinfo.io/json"
IP_CONNECT_TIMEOUT_S = 1.0
IP_READ_TIMEOUT_S = 2.0
PROVIDERS = ("aws", "gcp", "azure")
_PROVIDER_ALIASES = {"google": "gcp", "gce": "gcp", "amazon": "aws", "microsoft": "azure"}


@dataclass(frozen=True)
class CloudRegion:
    """One row of the packaged cloud-region map.

    Attributes:
        provider: ``"aws"``, ``"gcp"`` or ``"azure"``.
        region: the provider's region name (``"eu-west-1"``, ``"europe-west1"``, ``"westeurope"``).
        zone: the zone whose intensity applies (``"IE"``, ``"US-VA"``).
        location: where the provider says the region is.
    """

    provider: str
    region: str
    zone: str
    location: str


@dataclass(frozen=True)
class Location:
    """A zone found without an explicit setting, and how.

    Attributes:
        zone: the zone code.
        method: ``"cloud_region"`` or ``"ip_geolocation"``.
        detail: one line saying what was read and what it meant.
    """

    zone: str
    method: str
    detail: str


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch == "-")


@lru_cache(maxsize=1)
def load_cloud_regions() -> Mapping[tuple[str, str], CloudRegion]:
    """The packaged map, keyed by ``(provider, region)`` (read once, cached, read-only)."""
    text = (resources.files("carbon_callbacks") / "data" / CLOUD_TABLE).read_text("utf-8")
    rows = {}
    for r in csv.DictReader(io.StringIO(text)):
        entry = CloudRegion(r["provider"], r["region"], r["zone"], r["location"])
        rows[(entry.provider, entry.region)] = entry
    return MappingProxyType(rows)


def find_cloud_region(name: str) -> CloudRegion | None:
    """Look up a region: ``"eu-west-1"``, ``"aws:eu-west-1"``, ``"West Europe"``, ``"gcp/us-east1"``
    (case and spaces ignored).

    Returns ``None`` when no provider has a region of that name.
    """
    text = str(name).strip()
    provider = None
    for sep in (":", "/"):
        if sep in text:
            head, tail = text.split(sep, 1)
            provider = _PROVIDER_ALIASES.get(head.strip().lower(), head.strip().lower())
            text = tail
            break
    key = _squash(text.replace(" ", ""))
    for (prov, region), entry in load_cloud_regions().items():
        if (provider is None or prov == provider) and _squash(region) == key:
            return entry
    return None


def cloud_region_location(setting: str | None, env: Mapping[str, str]) -> Location | None:
    """The zone of the cloud region from the ``cloud_region`` setting or the environment.

    Raises:
        ConfigError: the setting names a region the map does not know (an unknown name in an
            environment variable is not an error: it is skipped with the others).
    """
    if setting is not None:
        entry = find_cloud_region(setting)
        if entry is None:
            raise ConfigError(
                f"cloud_region={setting!r} is not in the packaged map (data/cloud_regions.csv, "
                "AWS, Google Cloud and Azure region names such as 'eu-west-1', 'europe-west1', "
                "'westeurope'); set zone to the country or US state of your data centre instead"
            )
        return Location(
            entry.zone,
            "cloud_region",
            f"cloud_region={setting!r}: {entry.provider} {entry.region} ({entry.location})",
        )
    for var in CLOUD_REGION_ENV_VARS:
        raw = env.get(var)
        if raw is None or not raw.strip():
            continue
        entry = find_cloud_region(raw)
        if entry is not None:
            return Location(
                entry.zone,
                "cloud_region",
                f"{var}={raw.strip()!r}: {entry.provider} {entry.region} ({entry.location})",
            )
    return None


@dataclass(frozen=True)
class IpLocation:
    """What an IP geolocation service answered.

    Attributes:
        country: ISO 3166-1 alpha-2 code.
        region: the region or state name, if given.
        region_code: the region code, if given (``"CA"`` for California).
    """

    country: str
    region: str = ""
    region_code: str = ""


_IP_CACHE: dict[str, IpLocation | str] = {}
_IP_LOCK = threading.Lock()


def clear_ip_cache() -> None:
    """Forget cached IP lookups (tests)."""
    with _IP_LOCK:
        _IP_CACHE.clear()


def parse_ip_answer(answer: Any) -> IpLocation:
    """Read the country (and region) from ipinfo.io, ipapi.co or ip-api.com style answers.

    Raises:
        ValueError: no two-letter country code in the answer.
    """
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    country = ""
    for key in ("country_code", "countryCode", "country"):
        value = answer.get(key)
        if isinstance(value, str) and len(value.strip()) == 2 and value.strip().isalpha():
            country = value.strip().upper()
            break
    if not country:
        raise ValueError(f"no two-letter country code in the answer (keys {sorted(answer)[:8]})")
    region = next(
        (str(answer[k]) for k in ("region", "regionName", "region_name") if answer.get(k)), ""
    )
    code = next((str(answer[k]) for k in ("region_code", "regionCode") if answer.get(k)), "")
    return IpLocation(country, region.strip(), code.strip().upper())


def geolocate_ip(url: str = IP_GEOLOCATION_URL, *, offline: bool = False) -> IpLocation:
    """One IP geolocation lookup per URL per process (the answer or the failure is cached).

    Raises:
        FetchError: the lookup failed now or earlier in this process (message says why), or
            the network is off (nothing is sent).
    """
    if offline:
        raise FetchError(f"IP geolocation not attempted (offline): {url}", permanent=True)
    with _IP_LOCK:  # held during the lookup: parallel trackers wait for the one lookup
        cached = _IP_CACHE.get(url)
        if cached is None:
            client = HttpClient(
                connect_timeout_s=IP_CONNECT_TIMEOUT_S,
                read_timeout_s=IP_READ_TIMEOUT_S,
                max_attempts=1,
                max_total_s=IP_CONNECT_TIMEOUT_S + IP_READ_TIMEOUT_S,
            )
            try:
                cached = parse_ip_answer(client.get_json(url))
            except FetchError as exc:
                cached = str(exc)
            except ValueError as exc:
                cached = f"unreadable answer from {url}: {exc}"
            finally:
                client.close()
            _IP_CACHE[url] = cached
    if isinstance(cached, str):
        raise FetchError(cached, url=url)
    return cached


def ip_location(
    url: str, known_zones: set[str], us_states: Mapping[str, str], *, offline: bool
) -> Location:
    """The zone from an IP lookup: the US state where the answer names one, else the country.

    Args:
        url: the service.
        known_zones: zones the tables know.
        us_states: state name (upper case) -> zone (``"CALIFORNIA"`` -> ``"US-CA"``).
        offline: True refuses (no socket).

    Raises:
        FetchError: the lookup failed, or gave a country the tables do not know.
    """
    found = geolocate_ip(url, offline=offline)
    zone = found.country
    if zone == "US":
        state = us_states.get(found.region.upper())
        if state is None and f"US-{found.region_code}" in known_zones:
            state = f"US-{found.region_code}"
        zone = state or zone
    if zone not in known_zones:
        raise FetchError(f"{url} answered country {found.country!r}, which the tables do not know")
    what = f"country {found.country}" + (f", region {found.region}" if found.region else "")
    return Location(zone, "ip_geolocation", f"{url} answered {what}")
