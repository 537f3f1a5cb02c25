"""The GB Carbon Intensity API (National Energy System Operator): national and regional, no key.

Endpoints used (``{from}`` is ``YYYY-MM-DDThh:mmZ``, UTC):

- national: ``GET {base}/intensity/{from}/fw48h`` answers ``{"data": [{"from", "to",
  "intensity": {"forecast", "actual", "index"}}]}``; ``actual`` (null for the future) is
  measured, ``forecast`` the forecast;
- regional: ``GET {base}/regional/intensity/{from}/fw48h/regionid/{1-17}`` or
  ``.../postcode/{outward code}`` answers ``{"data": {"regionid", "dnoregion", "shortname",
  "postcode", "data": [{"from", "to", "intensity": {"forecast", "index"},
  "generationmix": [...]}]}}``. Regional values are forecasts only. The current-period regional
  calls answer with a *list* around that object; both shapes are read.

Values are gCO2/kWh in 30-minute slots; the API counts CO2 from generation only, so the basis
is *direct* (not CO2e, not lifecycle). Licence: CC BY 4.0 (NESO Carbon Intensity API; the
terms forbid implying endorsement). Only the outward part of a postcode (``"RG10"``) is ever
sent.
"""

from __future__ import annotations

import math
import re
from typing import Any

from carbon_callbacks.core.intensity.http import FetchError, HttpClient
from carbon_callbacks.core.intensity.live import (
    FetchResult,
    LiveSource,
    format_utc,
    intensity_value,
    parse_utc,
)
from carbon_callbacks.core.intensity.timeline import IntensityPoint

BASE_URL = "https://api.carbonintensity.org.uk"
ATTRIBUTION = "Carbon Intensity API, National Energy System Operator (NESO), CC BY 4.0"
SLOT_S = 1800.0
#: Region ids the API documents for its 14 DNO regions and 3 nations (1-17).
REGION_IDS = range(1, 18)
_OUTWARD = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")
_INWARD = re.compile(r"^[0-9][A-Z]{2}$")


def outward_code(postcode: str) -> str:
    """The outward code of a UK postcode (``"rg10 9xx"`` -> ``"RG10"``; ``"RG10"`` stays).

    Raises:
        ValueError: not the shape of a UK postcode or outward code.
    """
    if not isinstance(postcode, str):
        raise ValueError(f"gb_postcode must be text such as 'RG10', got {postcode!r}")
    text = " ".join(postcode.upper().split())
    parts = text.split(" ")
    outward = parts[0]
    if len(parts) == 1 and len(text) >= 5 and _INWARD.match(text[-3:]):
        outward = text[:-3]  # a full postcode typed without its space: "RG109XX"
    valid_inward = len(parts) == 1 or (len(parts) == 2 and _INWARD.match(parts[1]))
    if not valid_inward or not _OUTWARD.match(outward):
        raise ValueError(
            f"gb_postcode={postcode!r} is not a UK postcode: give the outward code, e.g. 'RG10' "
            "or 'SW1A' (only that part is sent)"
        )
    return outward


class GBCarbonIntensitySource(LiveSource):
    """Great Britain's intensity: national (measured and forecast) or one region (forecast).

    Args:
        region_id: a region id 1-17 for that region's forecast.
        postcode: an outward postcode (or a full one; only the outward part is used).
        base_url: the API's address (tests use a loopback server).
    """

    name = "gb"
    zone = "GB"
    basis = "direct"
    resolution_s = SLOT_S
    refresh_s = 1800.0
    has_forecast = True
    attribution = ATTRIBUTION

    def __init__(
        self,
        *,
        region_id: int | None = None,
        postcode: str | None = None,
        base_url: str = BASE_URL,
    ) -> None:
        if region_id is not None and postcode is not None:
            raise ValueError("give gb_region or gb_postcode, not both")
        if region_id is not None and (
            isinstance(region_id, bool)
            or not isinstance(region_id, int)
            or region_id not in REGION_IDS
        ):
            raise ValueError(f"gb_region must be a region id 1-17, got {region_id!r}")
        self.region_id = region_id
        self.postcode = outward_code(postcode) if postcode is not None else None
        self.base_url = base_url.rstrip("/")
        if region_id is not None:
            self.where = f"region {region_id}"
        elif self.postcode is not None:
            self.where = f"postcode {self.postcode}"
        else:
            self.where = "national"
        self.description = f"GB Carbon Intensity API (NESO), {self.where}"

    def fetch(self, client: HttpClient, now_unix_s: float) -> FetchResult:
        """The 48 h from the start of the previous half hour (measured where published)."""
        start = math.floor((now_unix_s - SLOT_S) / SLOT_S) * SLOT_S
        stamp = format_utc(start)
        if self.region_id is not None:
            url = f"{self.base_url}/regional/intensity/{stamp}/fw48h/regionid/{self.region_id}"
        elif self.postcode is not None:
            url = f"{self.base_url}/regional/intensity/{stamp}/fw48h/postcode/{self.postcode}"
        else:
            url = f"{self.base_url}/intensity/{stamp}/fw48h"
        answer = client.get_json(url)
        if self.region_id is None and self.postcode is None:
            return FetchResult(self._national(answer, url))
        return self._regional(answer, url)

    def _national(self, answer: Any, url: str) -> list[IntensityPoint]:
        rows = _data_list(answer, url)
        points = []
        for row in rows:
            start, end, intensity = _slot(row, url)
            try:
                actual = intensity_value(intensity.get("actual"), field_name="intensity.actual")
                forecast = intensity_value(
                    intensity.get("forecast"), field_name="intensity.forecast"
                )
            except ValueError as exc:
                raise FetchError(f"malformed period from {url}: {exc}", url=url) from None
            if actual is not None:
                points.append(
                    IntensityPoint(
                        start,
                        end,
                        actual,
                        "measured",
                        "GB Carbon Intensity API national actual",
                        self.basis,
                    )
                )
            elif forecast is not None:
                points.append(
                    IntensityPoint(
                        start,
                        end,
                        forecast,
                        "forecast",
                        "GB Carbon Intensity API national forecast",
                        self.basis,
                    )
                )
        return points

    def _regional(self, answer: Any, url: str) -> FetchResult:
        if not isinstance(answer, dict) or "data" not in answer:
            raise FetchError(f"unexpected answer shape from {url}: no 'data'", url=url)
        body = answer["data"]
        if isinstance(body, list):  # the current-period calls wrap the region in a list
            regions = [r for r in body if isinstance(r, dict)]
            if not regions:
                return FetchResult([])
            body = regions[0]
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise FetchError(f"unexpected answer shape from {url}: no region 'data' list", url=url)
        name = body.get("shortname") or body.get("dnoregion") or self.where
        region = body.get("regionid")
        label = f"GB Carbon Intensity API regional forecast, {name}" + (
            f" (region {region})" if region is not None else ""
        )
        problems = []
        if self.region_id is not None and region is not None and region != self.region_id:
            problems.append(f"asked for GB region {self.region_id}, the API answered for {region}")
        points = []
        for row in body["data"]:
            start, end, intensity = _slot(row, url)
            try:
                forecast = intensity_value(
                    intensity.get("forecast"), field_name="intensity.forecast"
                )
            except ValueError as exc:
                raise FetchError(f"malformed period from {url}: {exc}", url=url) from None
            if forecast is not None:
                points.append(IntensityPoint(start, end, forecast, "forecast", label, self.basis))
        return FetchResult(points, problems)


def _data_list(answer: Any, url: str) -> list[Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise FetchError(f"unexpected answer shape from {url}: no 'data' list", url=url)
    return answer["data"]


def _slot(row: Any, url: str) -> tuple[float, float, dict[str, Any]]:
    if not isinstance(row, dict) or not isinstance(row.get("intensity"), dict):
        raise FetchError(f"malformed period from {url}: {row!r:.80}", url=url)
    try:
        start = parse_utc(row.get("from"), field_name="from")
        end = parse_utc(row.get("to"), field_name="to")
    except ValueError as exc:
        raise FetchError(f"malformed period from {url}: {exc}", url=url) from None
    if not end > start:
        raise FetchError(f"malformed period from {url}: 'to' is not after 'from'", url=url)
    return start, end, row["intensity"]
