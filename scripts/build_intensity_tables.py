#!/usr/bin/env python3
"""Build the packaged carbon-intensity tables from the project's reference data.

Reads (from ``--source-dir``, default ``../shared/data`` relative to the repository root):

- ``country_intensity.csv``: ``alpha2,year,g_co2eq_per_kwh`` (Ember via Our World in Data,
  lifecycle gCO2eq/kWh, latest year per country);
- ``us_state_intensity_egrid2023.csv``: ``state_code,state,g_co2eq_per_kwh`` (US EPA eGRID2023,
  field STC2ERTA, already converted from lb/MWh to g/kWh).

Writes (to ``--out-dir``, default ``carbon_callbacks/data``):

- ``country_intensity.csv``: ``alpha2,year,g_co2eq_per_kwh``, sorted by code;
- ``us_state_intensity.csv``: ``state_code,state,g_co2eq_per_kwh,year`` (year 2023), sorted;
- ``INTENSITY_SOURCES.md``: attribution, licences, modifications and data notes.

Every value is checked (finite, >= 0), every code must be well formed and unique, and the run
fails with a message naming the file and line otherwise. The output is deterministic (no dates),
so ``--check`` can tell whether the packaged files are up to date (exit status 1 if not).

Usage::

    python scripts/build_intensity_tables.py [--source-dir DIR] [--out-dir DIR] [--check]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE_DIR = REPO_ROOT / ".." / "shared" / "data"
DEFAULT_OUT_DIR = REPO_ROOT / "carbon_callbacks" / "data"

COUNTRY_SOURCE = "country_intensity.csv"
STATE_SOURCE = "us_state_intensity_egrid2023.csv"
COUNTRY_OUT = "country_intensity.csv"
STATE_OUT = "us_state_intensity.csv"
SOURCES_OUT = "INTENSITY_SOURCES.md"

#: Data year of eGRID2023 (the edition name is the data year).
EGRID_YEAR = 2023
#: Rows of the eGRID source that are not states (dropped; the US value comes from Ember).
EGRID_NON_STATE_CODES = {"USA"}
#: 50 states plus the District of Columbia.
EXPECTED_STATE_COUNT = 51
#: Plausible range of data years.
MIN_YEAR, MAX_YEAR = 1990, 2100
#: Rows older than this are listed in the notes (the table keeps them).
STALE_BEFORE_YEAR = 2020
#: Values at or above this are listed in the notes as worth a second look (kept as published).
NOTE_AT_OR_ABOVE_G_PER_KWH = 1000.0


class TableError(ValueError):
    """A source table failed validation. The message names the file and the line."""


@dataclass(frozen=True)
class CountryRow:
    """One country: ISO 3166-1 alpha-2 code, data year, lifecycle intensity in gCO2eq/kWh."""

    alpha2: str
    year: int
    g_co2eq_per_kwh: float


@dataclass(frozen=True)
class StateRow:
    """One US state (or DC): USPS code, name, direct CO2e output rate in gCO2eq/kWh."""

    state_code: str
    state: str
    g_co2eq_per_kwh: float


def _read_rows(path: Path, header: list[str]) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV with exactly ``header``; return ``(line number, row)`` pairs."""
    if not path.is_file():
        raise TableError(f"{path}: file not found (pass --source-dir)")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != header:
            raise TableError(f"{path}: header must be {header}, got {reader.fieldnames}")
        rows = []
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                raise TableError(f"{path}:{reader.line_num}: expected {len(header)} fields")
            rows.append((reader.line_num, {k: v.strip() for k, v in row.items()}))
    if not rows:
        raise TableError(f"{path}: no data rows")
    return rows


def _intensity(path: Path, line: int, text: str) -> float:
    """Parse a gCO2eq/kWh value; refuse non-numbers, non-finite and negative values."""
    try:
        value = float(text)
    except ValueError:
        raise TableError(f"{path}:{line}: intensity {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TableError(f"{path}:{line}: intensity {text!r} must be finite and >= 0 g/kWh")
    return value


def read_countries(path: Path) -> list[CountryRow]:
    """Read and validate the country table; return rows sorted by code."""
    out: dict[str, CountryRow] = {}
    for line, row in _read_rows(path, ["alpha2", "year", "g_co2eq_per_kwh"]):
        code = row["alpha2"].upper()
        if not re.fullmatch(r"[A-Z]{2}", code):
            raise TableError(f"{path}:{line}: {row['alpha2']!r} is not an ISO 3166-1 alpha-2 code")
        if code in out:
            raise TableError(f"{path}:{line}: country {code} appears twice")
        if not re.fullmatch(r"\d{4}", row["year"]) or not MIN_YEAR <= int(row["year"]) <= MAX_YEAR:
            raise TableError(f"{path}:{line}: year {row['year']!r} is not a plausible year")
        value = _intensity(path, line, row["g_co2eq_per_kwh"])
        out[code] = CountryRow(code, int(row["year"]), value)
    return [out[code] for code in sorted(out)]


def read_states(path: Path) -> list[StateRow]:
    """Read and validate the eGRID state table (national row dropped); return sorted rows."""
    out: dict[str, StateRow] = {}
    for line, row in _read_rows(path, ["state_code", "state", "g_co2eq_per_kwh"]):
        code = row["state_code"].upper()
        if code in EGRID_NON_STATE_CODES:
            continue
        if not re.fullmatch(r"[A-Z]{2}", code):
            raise TableError(f"{path}:{line}: {row['state_code']!r} is not a two-letter state code")
        if code in out:
            raise TableError(f"{path}:{line}: state {code} appears twice")
        if not row["state"]:
            raise TableError(f"{path}:{line}: state name is empty")
        value = _intensity(path, line, row["g_co2eq_per_kwh"])
        out[code] = StateRow(code, _title(row["state"]), value)
    if len(out) != EXPECTED_STATE_COUNT:
        raise TableError(
            f"{path}: expected {EXPECTED_STATE_COUNT} states (50 and DC), got {len(out)}"
        )
    return [out[code] for code in sorted(out)]


def _title(name: str) -> str:
    """``"district of columbia"`` -> ``"District of Columbia"``."""
    small = {"of", "and", "the"}
    words = name.split()
    return " ".join(w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def country_csv(rows: list[CountryRow]) -> str:
    """Packaged country table text."""
    return _csv_text(
        ["alpha2", "year", "g_co2eq_per_kwh"],
        [[r.alpha2, r.year, repr(r.g_co2eq_per_kwh)] for r in rows],
    )


def state_csv(rows: list[StateRow]) -> str:
    """Packaged US state table text."""
    return _csv_text(
        ["state_code", "state", "g_co2eq_per_kwh", "year"],
        [[r.state_code, r.state, repr(r.g_co2eq_per_kwh), EGRID_YEAR] for r in rows],
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sources_markdown(
    countries: list[CountryRow], states: list[StateRow], country_src: Path, state_src: Path
) -> str:
    """Attribution and notes for the packaged tables (deterministic: no dates)."""
    years: dict[int, int] = {}
    for row in countries:
        years[row.year] = years.get(row.year, 0) + 1
    year_text = ", ".join(f"{year}: {count}" for year, count in sorted(years.items()))
    stale = [f"{r.alpha2} ({r.year})" for r in countries if r.year < STALE_BEFORE_YEAR]
    high = [
        f"{r.alpha2} ({r.g_co2eq_per_kwh:g} g/kWh, {r.year})"
        for r in countries
        if r.g_co2eq_per_kwh >= NOTE_AT_OR_ABOVE_G_PER_KWH
    ]
    return f"""# Sources of the packaged carbon-intensity tables

Generated by `scripts/build_intensity_tables.py`; do not edit by hand. Units: grams CO2-equivalent
per kilowatt-hour of electricity (gCO2eq/kWh).

## `{COUNTRY_OUT}` ({len(countries)} countries)

- **Source:** Ember (2026), with major processing by Our World in Data, "Carbon intensity of
  electricity generation", https://ourworldindata.org/grapher/carbon-intensity-electricity
  (table as of 2026-06-30).
- **Credit:** Ember; Our World in Data.
- **Licence:** Creative Commons Attribution 4.0 International (CC BY 4.0),
  https://creativecommons.org/licenses/by/4.0/
- **Modifications:** only the latest year available for each country is kept; countries are keyed
  by ISO 3166-1 alpha-2 code; columns renamed to `alpha2,year,g_co2eq_per_kwh`; rows sorted by
  code. Values are unchanged.
- **Basis:** lifecycle emissions (CO2-equivalent, including upstream fuel supply and plant
  construction), production mix of the country (imports not counted), annual average.
- **Data years:** {year_text}. Each row carries its own year.
- Rows older than {STALE_BEFORE_YEAR} (kept; use with care): {", ".join(stale) or "none"}.
- Rows at or above {NOTE_AT_OR_ABOVE_G_PER_KWH:g} g/kWh (kept as published; round values may
  be estimates for small systems, worth checking against the source): {", ".join(high) or "none"}.
- Input file SHA-256: `{_sha256(country_src)}`.

## `{STATE_OUT}` ({len(states) - 1} US states and DC)

- **Source:** US Environmental Protection Agency, Emissions & Generation Resource Integrated
  Database (eGRID2023, data year {EGRID_YEAR}), field `STC2ERTA` (state annual CO2-equivalent
  total output emission rate), https://www.epa.gov/egrid/download-data
- **Licence:** US federal government data, no copyright restriction.
- **Modifications:** converted from lb/MWh to g/kWh (x 0.45359237, done in the project's
  reference data, `{STATE_SOURCE}`); the national `usa` row is
  dropped (the country value for `US` comes from the Ember table); state names title-cased;
  column `year` added; rows sorted by USPS code.
- **Basis:** direct emissions: CO2, CH4 and N2O emitted by fuel combustion at the power plants
  in the state, as CO2-equivalent, per MWh generated there (no upstream or lifecycle emissions,
  imports and transmission losses not counted). Lower than a lifecycle figure for the same grid.
- Input file SHA-256: `{_sha256(state_src)}`.

## World average (in code, not a table)

473 gCO2eq/kWh for 2024, lifecycle basis (Ember, Global Electricity Review 2025). Used only as a
labelled fallback when the location is unknown, or when the zone `WORLD` is chosen.
"""


def build(source_dir: Path) -> dict[str, str]:
    """Validate the sources and return ``{output file name: text}``."""
    country_src = source_dir / COUNTRY_SOURCE
    state_src = source_dir / STATE_SOURCE
    countries = read_countries(country_src)
    states = read_states(state_src)
    return {
        COUNTRY_OUT: country_csv(countries),
        STATE_OUT: state_csv(states),
        SOURCES_OUT: sources_markdown(countries, states, country_src, state_src),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source-dir",
        type=Path,
        default=DEFAULT_SOURCE_DIR,
        help=f"folder with the reference CSVs (default: {DEFAULT_SOURCE_DIR})",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"folder for the packaged tables (default: {DEFAULT_OUT_DIR})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the packaged files differ from what would be built",
    )
    args = parser.parse_args(argv)
    try:
        outputs = build(args.source_dir.resolve())
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = []
    for name, text in outputs.items():
        path = args.out_dir / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {path} ({text.count(chr(10))} lines)")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
