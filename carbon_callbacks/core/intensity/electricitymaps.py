"""Electricity Maps: carbon intensity for a zone or a position, with a token.

Endpoints used (v3, header ``auth-token``; the base URL is a setting because v4 exists):

- ``GET {base}/carbon-intensity/history?zone=..`` (or ``lat=..&lon=..``): ``{"zone",
  "history": [{"zone", "carbonIntensity", "datetime", "updatedAt", "createdAt",
  "emissionFactorType", "isEstimated", "estimationMethod"}]}``, the last 24 h, hourly;
- ``GET {base}/carbon-intensity/latest``: one such object without the list, used when the
  token's plan does not include ``history``;
- ``GET {base}/carbon-intensity/forecast``: ``{"zone", "forecast": [{"carbonIntensity",
  "datetime"}], "updatedAt"}`` where the plan allows (a refusal turns forecasts off, once).

Values are gCO2eq/kWh on a consumption (flow-traced) basis, lifecycle unless the answer's
``emissionFactorType`` says ``direct``; ``datetime`` starts an hourly slot. HTTP 401 means the
token was rejected; 400/404 that the zone is unknown: both stop the refreshing with a message.
The token is sent only in the header, never in a URL, a message or the run log. Electricity
Maps' terms restrict the free tier to personal, non-commercial use.
"""

from __future__ import annotations

from typing import Any

from carbon_callbacks.core.intensity.http import FetchError, HttpClient
from carbon_callbacks.core.intensity.live import (
    FetchResult,
    LiveSource,
    intensity_value,
    parse_utc,
)
from carbon_callbacks.core.intensity.timeline import IntensityPoint

BASE_URL = "https://api.electricitymaps.com/v3"
ATTRIBUTION = "Electricity Maps (electricitymaps.com), proprietary API"
SLOT_S = 3600.0
#: Our zone codes whose Electricity Maps code differs.
ZONE_CODES = {"DK1": "DK-DK1", "DK2": "DK-DK2"}


def electricitymaps_zone(zone: str) -> str:
    """Electricity Maps' code for one of our zones (``"DK1"`` -> ``"DK-DK1"``; ``"DE"`` stays)."""
    return ZONE_CODES.get(zone, zone)


class ElectricityMapsSource(LiveSource):
    """Electricity Maps for one zone or position.

    Args:
        token: the API token (sent in the ``auth-token`` header only).
        zone: an Electricity Maps zone (``"DE"``, ``"DK-DK1"``, ``"US-CAL-CISO"``), or
        lat_lon: a position (degrees) instead of the zone.
        label: the zone label estimates carry (default: the zone, or ``"LATLON"``).
        base_url: the API's address, version included (tests use a loopback server).
    """

    name = "electricitymaps"
    basis = "lifecycle"
    resolution_s = SLOT_S
    refresh_s = 3600.0
    has_forecast = True
    attribution = ATTRIBUTION

    def __init__(
        self,
        token: str,
        *,
        zone: str | None = None,
        lat_lon: tuple[float, float] | None = None,
        label: str | None = None,
        base_url: str = BASE_URL,
    ) -> None:
        if not token:
            raise ValueError("Electricity Maps needs a token")
        if (zone is None) == (lat_lon is None):
            raise ValueError("give Electricity Maps a zone or a (lat, lon), one of them")
        self._token = token
        self.em_zone = zone
        self.lat_lon = lat_lon
        self.zone = label or zone or "LATLON"
        self.base_url = base_url.rstrip("/")
        where = zone if zone is not None else f"lat {lat_lon[0]:g}, lon {lat_lon[1]:g}"  # type: ignore[index]
        self.description = f"Electricity Maps, {where}"
        self._history_allowed = True
        self._forecast_allowed = True
        #: The zone Electricity Maps said it answered for (useful with ``lat_lon``).
        self.answered_zone: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"ElectricityMapsSource({self.description!r})"

    def _params(self) -> dict[str, Any]:
        if self.em_zone is not None:
            return {"zone": self.em_zone}
        lat, lon = self.lat_lon  # type: ignore[misc]
        return {"lat": f"{lat:.4f}", "lon": f"{lon:.4f}"}

    def _get(self, client: HttpClient, what: str) -> Any:
        url = f"{self.base_url}/carbon-intensity/{what}"
        try:
            return client.get_json(url, params=self._params(), headers={"auth-token": self._token})
        except FetchError as exc:
            if exc.status == 401:
                raise FetchError(
                    f"Electricity Maps rejected the token (HTTP 401) at {url}: check "
                    "electricitymaps_token or $CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN",
                    url=exc.url,
                    status=401,
                    permanent=True,
                ) from None
            if exc.status in (400, 404) and what != "forecast":
                raise FetchError(
                    f"Electricity Maps does not know {self.description.split(', ', 1)[1]!r} "
                    f"({exc}); set electricitymaps_zone to one of its zone codes",
                    url=exc.url,
                    status=exc.status,
                    permanent=True,
                ) from None
            raise

    def fetch(self, client: HttpClient, now_unix_s: float) -> FetchResult:
        """Hourly values of the last day (or the latest value) and, if allowed, the forecast."""
        problems: list[str] = []
        points: list[IntensityPoint] = []
        if self._history_allowed:
            try:
                answer = self._get(client, "history")
                points = self._history(answer)
            except FetchError as exc:
                if exc.status != 403:
                    raise
                self._history_allowed = False
                problems.append(
                    "Electricity Maps history is not in this token's plan (HTTP 403); "
                    "using the latest value on each refresh"
                )
        if not self._history_allowed:
            points = self._history(self._get(client, "latest"), single=True)
        if self._forecast_allowed:
            try:
                points += self._forecast(self._get(client, "forecast"))
            except FetchError as exc:
                if exc.permanent or exc.status in (402, 403, 404):
                    self._forecast_allowed = False
                    problems.append(
                        f"Electricity Maps forecast unavailable ({exc}); predictions and "
                        "best-start use measured values only"
                    )
                else:
                    problems.append(f"Electricity Maps forecast failed this time: {exc}")
        return FetchResult(points, problems)

    def _history(self, answer: Any, *, single: bool = False) -> list[IntensityPoint]:
        url = f"{self.base_url}/carbon-intensity/{'latest' if single else 'history'}"
        if not isinstance(answer, dict):
            raise FetchError(f"unexpected answer shape from {url}: not an object", url=url)
        self._check_zone(answer)
        if single or "history" not in answer:
            rows = [answer] if "carbonIntensity" in answer else []
            if not rows:
                raise FetchError(f"unexpected answer shape from {url}: no carbonIntensity", url=url)
        else:
            rows = answer["history"]
            if not isinstance(rows, list):
                raise FetchError(
                    f"unexpected answer shape from {url}: 'history' not a list", url=url
                )
        return self._rows(rows, "measured", url)

    def _forecast(self, answer: Any) -> list[IntensityPoint]:
        url = f"{self.base_url}/carbon-intensity/forecast"
        if not isinstance(answer, dict) or not isinstance(answer.get("forecast"), list):
            raise FetchError(f"unexpected answer shape from {url}: no 'forecast' list", url=url)
        return self._rows(answer["forecast"], "forecast", url)

    def _rows(self, rows: list[Any], kind: str, url: str) -> list[IntensityPoint]:
        points = []
        for row in rows:
            if not isinstance(row, dict):
                raise FetchError(f"malformed entry from {url}: {row!r:.80}", url=url)
            try:
                start = parse_utc(row.get("datetime"), field_name="datetime")
                value = intensity_value(row.get("carbonIntensity"), field_name="carbonIntensity")
            except ValueError as exc:
                raise FetchError(f"malformed entry from {url}: {exc}", url=url) from None
            if value is None:
                continue
            factor = row.get("emissionFactorType")
            basis = factor if factor in ("lifecycle", "direct") else self.basis
            estimated = row.get("isEstimated")
            how = (
                "forecast"
                if kind == "forecast"
                else (
                    f"estimated ({row.get('estimationMethod') or 'method not given'})"
                    if estimated
                    else "measured"
                )
            )
            source = f"Electricity Maps {self.answered_zone or self.zone} {how}"
            points.append(IntensityPoint(start, start + SLOT_S, value, kind, source, basis))
        return points

    def _check_zone(self, answer: dict[str, Any]) -> None:
        zone = answer.get("zone")
        if isinstance(zone, str) and zone:
            self.answered_zone = zone
