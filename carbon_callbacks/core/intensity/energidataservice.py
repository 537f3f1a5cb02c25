"""Energi Data Service (Energinet): Danish CO2 intensity, measured and forecast, no key.

Datasets (``GET {base}/dataset/{name}``):

- ``CO2Emis``: "CO2 emission from electricity consumed in Denmark" in g/kWh, 5-minute
  resolution, near real time (measured);
- ``CO2EmisProg``: the prognosis of the same quantity, at least 9 hours ahead, updated about
  every 15 minutes (forecast).

An answer is ``{"total", "filters", "limit", "dataset", "records": [{"Minutes5UTC",
"Minutes5DK", "PriceArea", "CO2Emission"}]}``; ``Minutes5UTC`` (UTC, no offset) starts a
5-minute slot. Pages are read with ``offset``/``limit`` until ``total`` is reached, at most
:data:`MAX_PAGES` of them. A bare list of records is accepted too.

Basis: Energinet computes the emissions of the power plants (heat and power split by the 125 %
method), so the values are *direct* CO2, not lifecycle. Energinet's dataset description notes
that DK1 and DK2 currently carry the same, all-Denmark value; zone ``"DK"`` takes the mean of the
two per slot. Licence: CC BY 4.0, "Source: Energinet (www.energidataservice.dk)".

``start``/``end`` are sent with ``timezone=utc``; the window has hours of margin on both sides,
so it still covers what is needed if the service reads them as Danish local time.
"""

from __future__ import annotations

import json
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

BASE_URL = "https://api.energidataservice.dk"
MEASURED_DATASET = "CO2Emis"
FORECAST_DATASET = "CO2EmisProg"
ATTRIBUTION = "Source: Energinet (www.energidataservice.dk), CC BY 4.0"
#: Rows asked for per page.
PAGE_LIMIT = 2000
#: Pages read per dataset per refresh, at most.
MAX_PAGES = 5
#: Measured history fetched on each refresh, seconds before now.
PAST_S = 6 * 3600.0
#: Forecast asked for, seconds after now (the service publishes at least 9 h).
AHEAD_S = 48 * 3600.0
SLOT_S = 300.0
_AREAS = {"DK": ("DK1", "DK2"), "DK1": ("DK1",), "DK2": ("DK2",)}


class EnergiDataServiceSource(LiveSource):
    """Danish intensity from Energi Data Service.

    Args:
        zone: ``"DK1"`` (West Denmark), ``"DK2"`` (East Denmark) or ``"DK"`` (mean of both).
        base_url: the service's address (tests use a loopback server).
        page_limit / max_pages: paging bounds per dataset and refresh.
    """

    name = "energidataservice"
    basis = "direct"
    resolution_s = SLOT_S
    refresh_s = 300.0
    has_forecast = True
    attribution = ATTRIBUTION

    def __init__(
        self,
        zone: str,
        *,
        base_url: str = BASE_URL,
        page_limit: int = PAGE_LIMIT,
        max_pages: int = MAX_PAGES,
    ) -> None:
        code = zone.strip().upper()
        if code not in _AREAS:
            raise ValueError(
                f"Energi Data Service covers DK1, DK2 and DK (their mean), not {zone!r}"
            )
        self.zone = code
        self.areas = _AREAS[code]
        self.base_url = base_url.rstrip("/")
        self.page_limit = int(page_limit)
        self.max_pages = int(max_pages)
        self.description = f"Energi Data Service (Energinet), {code}"

    def fetch(self, client: HttpClient, now_unix_s: float) -> FetchResult:
        """Measured values for the last hours and the forecast ahead (see the module)."""
        results: list[IntensityPoint] = []
        problems: list[str] = []
        errors: list[FetchError] = []
        for dataset, kind, start, end in (
            (MEASURED_DATASET, "measured", now_unix_s - PAST_S, now_unix_s + 3 * 3600.0),
            (FORECAST_DATASET, "forecast", now_unix_s - 3 * 3600.0, now_unix_s + AHEAD_S),
        ):
            try:
                points = self._dataset(client, dataset, kind, start, end)
            except FetchError as exc:
                errors.append(exc)
                problems.append(f"Energi Data Service {dataset} failed: {exc}")
                continue
            if not points:
                problems.append(f"Energi Data Service {dataset} returned no values for {self.zone}")
            results.extend(points)
        if len(errors) == 2:
            first = errors[0]
            raise FetchError(
                f"{errors[0]}; and {errors[1]}",
                url=first.url,
                status=first.status,
                permanent=all(e.permanent for e in errors),
                retry_after_s=max(
                    (e.retry_after_s for e in errors if e.retry_after_s is not None), default=None
                ),
            )
        return FetchResult(results, problems if results else [])

    def _dataset(
        self, client: HttpClient, dataset: str, kind: str, start: float, end: float
    ) -> list[IntensityPoint]:
        url = f"{self.base_url}/dataset/{dataset}"
        records: list[Any] = []
        offset = 0
        for _ in range(self.max_pages):
            params = {
                "start": format_utc(start, "%Y-%m-%dT%H:%M"),
                "end": format_utc(end, "%Y-%m-%dT%H:%M"),
                "timezone": "utc",
                "filter": json.dumps({"PriceArea": list(self.areas)}, separators=(",", ":")),
                "sort": "Minutes5UTC ASC",
                "offset": offset,
                "limit": self.page_limit,
            }
            answer = client.get_json(url, params=params)
            page, total = _records(answer, url)
            records.extend(page)
            offset += len(page)
            if not page or total is None or offset >= total:
                break
        return self._points(records, kind, dataset, url)

    def _points(
        self, records: list[Any], kind: str, dataset: str, url: str
    ) -> list[IntensityPoint]:
        by_slot: dict[float, dict[str, float]] = {}
        for row in records:
            if not isinstance(row, dict):
                raise FetchError(f"malformed record from {url}: {row!r:.80}", url=url)
            area = row.get("PriceArea")
            if area not in self.areas:
                continue  # a filter the service did not apply
            try:
                start = parse_utc(row.get("Minutes5UTC"), field_name="Minutes5UTC")
                value = intensity_value(row.get("CO2Emission"), field_name="CO2Emission")
            except ValueError as exc:
                raise FetchError(f"malformed record from {url}: {exc}", url=url) from None
            if value is None:
                continue  # a slot not yet published
            by_slot.setdefault(start, {})[area] = value
        source = f"Energi Data Service {dataset} ({kind})"
        points = []
        for start, values in sorted(by_slot.items()):
            if len(values) < len(self.areas):
                continue  # zone DK: only slots both areas published
            mean = sum(values.values()) / len(values)
            label = source if len(self.areas) == 1 else f"{source}, mean of DK1 and DK2"
            points.append(IntensityPoint(start, start + SLOT_S, mean, kind, label, self.basis))
        return points


def _records(answer: Any, url: str) -> tuple[list[Any], int | None]:
    """The page's records and the dataset's ``total`` (``None`` when not given)."""
    if isinstance(answer, list):
        return answer, None
    if not isinstance(answer, dict) or not isinstance(answer.get("records"), list):
        keys = sorted(answer)[:6] if isinstance(answer, dict) else type(answer).__name__
        raise FetchError(f"unexpected answer shape from {url}: no 'records' list ({keys})", url=url)
    total = answer.get("total")
    return answer["records"], total if isinstance(total, int) and total >= 0 else None
