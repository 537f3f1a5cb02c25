"""Tables of runs and the statement for a paper, as text, Markdown, JSON or CSV.

:func:`build_report` turns collected logs (:mod:`carbon_callbacks.report.collect`) into a
:class:`Report`: one :class:`RunRow` per counted run (duration, kWh in total and per component,
gCO2eq, the intensity applied and its source, PUE, km by car, measured vs predicted) and the
aggregate statement in the style of the reference papers:

    The training of models in this work is estimated to use X kWh of electricity contributing
    to Y kg of CO2eq. This is equivalent to Z km travelled by car.

followed by the method: how the energy was obtained (hardware counters, sampled power, models),
the PUE, the carbon intensity (zone, value, source, year), how many runs were measured in full
and how many were predicted from their first epochs, and the car factor used. Numbers come
only from the logs; every run is counted by :func:`~carbon_callbacks.core.runlog.run_figure`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from carbon_callbacks import __version__
from carbon_callbacks.core.equivalents import (
    CAR_FACTORS,
    DEFAULT_CAR_BASIS,
    Equivalent,
    km_by_car,
    report_equivalents,
)
from carbon_callbacks.core.runlog import RunFigure, RunLog, aggregate_runs, utc_iso
from carbon_callbacks.core.units import J_PER_KWH
from carbon_callbacks.report.collect import Collected

#: Output formats :func:`render` knows.
FORMATS = ("text", "markdown", "json", "csv")
#: Components reported separately.
COMPONENTS = ("gpu", "cpu", "dram")
#: Schema tag of the JSON output.
JSON_SCHEMA = "carbon_callbacks.report/1"

_METHOD_WORDS = {
    "counter": "hardware energy counter",
    "sampled": "sampled power integrated over time",
    "modelled": "a model",
    "constant": "a user-stated constant power",
    "carbontracker": "carbontracker's mean sampled power x epoch duration",
}


def _method_words(component: str, method: str) -> str:
    """A method in words; counters are named by the interface that has them."""
    if method == "counter":
        return "NVML's total-energy counter" if component == "gpu" else "RAPL energy counters"
    if method == "modelled":
        return {
            "gpu": "modelled as TDP x utilisation",
            "cpu": "modelled as TDP x machine-wide utilisation",
            "dram": "modelled from memory in use",
        }.get(component, "modelled")
    return _METHOD_WORDS.get(method, method)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def sig(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits; ``"-"`` for None."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def paper_number(value: float) -> str:
    """A figure for prose: three decimals from 0.1 up (as the seeds print), else three
    significant digits (a small run must not read as 0.000)."""
    if value == 0:
        return "0"
    if abs(value) >= 0.1:
        return f"{value:.3f}"
    return f"{value:.3g}"


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (with days past 24 h); one decimal under a minute; ``"-"`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days} d {text}" if days else text


@dataclass
class RunRow:
    """One counted run, as reported.

    Attributes:
        run: the run's name, else its id.
        run_id: the run id from the log.
        path: the log file.
        source_format: ``"carbon_callbacks"`` or ``"carbontracker"``.
        writer_version: version of the package that wrote the log, or None.
        started_at: ISO-8601 start time (UTC for run logs; local time for carbontracker logs).
        status: the footer's status (``completed``/``interrupted``/``failed``) or None.
        basis: ``measured``, ``predicted`` or ``partial`` (see
            :func:`~carbon_callbacks.core.runlog.run_figure`); ``basis_reason`` says why.
        epochs / planned_epochs: epochs the figure stands for; epochs planned.
        duration_s: seconds the figure stands for.
        energy_kwh: kWh (PUE included) counted for the run.
        co2_g: grams CO2eq counted for the run.
        energy_kwh_gpu / energy_kwh_cpu / energy_kwh_dram: measured kWh per component (PUE
            included; the measured totals' split, see :func:`component_energy_kwh`), None when
            the component was not measured.
        methods: how each component was measured, e.g. ``"gpu: counter; cpu: modelled"``.
        intensity_g_per_kwh: the effective intensity, gCO2eq / kWh of the counted figure.
        intensity_zone / intensity_source / intensity_kind / intensity_year: its provenance.
        pue: the PUE applied (None when the log does not say); ``pue_detail`` how it is known.
        km_by_car: the counted CO2eq as km by car (see :attr:`Report.car_basis`).
        measured_energy_kwh / measured_co2_g / measured_duration_s / measured_epochs: what the
            log measured (resumed segments included).
        predicted_energy_kwh (+ ``_low``/``_high``) / predicted_co2_g / predicted_epochs: the
            latest prediction of the whole run, or None.
        notes: damage or caveats, ``"; "``-separated.
    """

    run: str
    run_id: str | None
    path: str
    source_format: str
    writer_version: str | None
    started_at: str | None
    status: str | None
    basis: str
    basis_reason: str
    epochs: int | None
    planned_epochs: int | None
    duration_s: float
    energy_kwh: float
    co2_g: float
    energy_kwh_gpu: float | None
    energy_kwh_cpu: float | None
    energy_kwh_dram: float | None
    methods: str
    intensity_g_per_kwh: float | None
    intensity_zone: str | None
    intensity_source: str | None
    intensity_kind: str | None
    intensity_year: int | None
    pue: float | None
    pue_detail: str
    km_by_car: float
    measured_energy_kwh: float
    measured_co2_g: float
    measured_duration_s: float
    measured_epochs: int
    predicted_energy_kwh: float | None
    predicted_energy_kwh_low: float | None
    predicted_energy_kwh_high: float | None
    predicted_co2_g: float | None
    predicted_epochs: int | None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass
class Report:
    """Everything a report prints (see :func:`build_report`).

    Attributes:
        rows: one per counted run.
        energy_kwh / co2_g / duration_s: totals over the counted runs (kWh incl. PUE, grams,
            seconds summed over runs).
        by_basis: counted runs per basis (``measured``, ``predicted``, ``partial``).
        equivalents: the totals as km by car, smartphone charges, tree seedlings and the share
            of a per-capita 1.5 °C budget, each with its source.
        statement: the paragraph for a paper.
        method: how the figures were obtained, one paragraph.
        car_basis: key of :data:`~carbon_callbacks.core.equivalents.CAR_FACTORS` used.
        not_counted: ``(path, reason)`` for logs read but not counted (duplicates, segments a
            resumed run already includes).
        skipped: ``(path, reason)`` for paths that could not be used at all.
        notes: ``(path, note)`` for damaged or incomplete logs that were counted.
        generated_at: ISO-8601 UTC time of the report.
    """

    rows: list[RunRow]
    energy_kwh: float
    co2_g: float
    duration_s: float
    by_basis: dict[str, int]
    equivalents: list[Equivalent]
    statement: str
    method: str
    car_basis: str
    not_counted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    generated_at: str = ""

    @property
    def runs_counted(self) -> int:
        """Number of runs in the totals."""
        return len(self.rows)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the JSON output)."""
        return {
            "schema": JSON_SCHEMA,
            "package_version": __version__,
            "generated_at": self.generated_at,
            "statement": self.statement,
            "method": self.method,
            "totals": {
                "runs": self.runs_counted,
                "energy_kwh": self.energy_kwh,
                "co2_g": self.co2_g,
                "co2_kg": self.co2_g / 1000.0,
                "duration_s": self.duration_s,
                "by_basis": dict(self.by_basis),
            },
            "car_basis": self.car_basis,
            "equivalents": [e.to_dict() for e in self.equivalents],
            "runs": [row.to_dict() for row in self.rows],
            "not_counted": [{"path": p, "reason": r} for p, r in self.not_counted],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "notes": [{"path": p, "note": n} for p, n in self.notes],
        }


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _sensor_components(log: RunLog) -> dict[str, str]:
    """Sensor name -> component, from the header (else the name's prefix)."""
    out: dict[str, str] = {}
    sensors = log.header.get("sensors")
    if isinstance(sensors, list):
        for sensor in sensors:
            if isinstance(sensor, dict) and isinstance(sensor.get("name"), str):
                out[sensor["name"]] = str(sensor.get("component") or "")
    return out


def _component_of(name: str, known: dict[str, str]) -> str:
    component = known.get(name) or name.split(":", 1)[0]
    return component if component in COMPONENTS else "other"


def component_energy_kwh(log: RunLog) -> dict[str, float]:
    """Measured kWh (PUE included) per component: the footer's ``energy_kwh_by_component`` (the
    tracker's totals, resumed segments included), else summed over the records the totals
    count (epochs, and phases with ``counted``) of this file."""
    footer = log.footer or {}
    written = footer.get("energy_kwh_by_component")
    if isinstance(written, dict):
        out: dict[str, float] = {}
        for name, kwh in written.items():
            value = _number(kwh)
            if value is not None:
                comp = name if name in COMPONENTS else "other"
                out[comp] = out.get(comp, 0.0) + value
        return out
    known = _sensor_components(log)
    out = {}
    for record in [*log.epochs, *(p for p in log.phases if p.get("counted") is True)]:
        energy_j = record.get("energy_j")
        pue = _number(record.get("pue")) or _number(log.header.get("pue")) or 1.0
        if not isinstance(energy_j, dict):
            continue
        for name, joules in energy_j.items():
            value = _number(joules)
            if value is None:
                continue
            comp = _component_of(str(name), known)
            out[comp] = out.get(comp, 0.0) + value / J_PER_KWH * pue
    return out


def component_methods(log: RunLog) -> dict[str, list[str]]:
    """Component -> methods used (header sensors, plus fallbacks seen in epoch records)."""
    known = _sensor_components(log)
    out: dict[str, list[str]] = {}

    def add(component: str, method: str) -> None:
        for part in method.split(">"):
            part = part.strip()
            if part and part not in out.setdefault(component, []):
                out[component].append(part)

    sensors = log.header.get("sensors")
    if isinstance(sensors, list):
        for sensor in sensors:
            if isinstance(sensor, dict):
                add(str(sensor.get("component") or "other"), str(sensor.get("method") or ""))
    for record in log.epochs:
        methods = record.get("methods")
        if isinstance(methods, dict):
            for name, method in methods.items():
                add(_component_of(str(name), known), str(method))
    return out


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def _versions(rows: list[RunRow]) -> str:
    found = sorted({r.writer_version for r in rows if r.writer_version})
    return f" {', '.join(found)}" if found else ""


def _intensity_of(log: RunLog) -> dict[str, Any]:
    """The header's intensity, unless the epochs used others (then ``zone``/``source`` say
    ``mixed``)."""
    header = log.header.get("intensity")
    base = dict(header) if isinstance(header, dict) else {}
    labels = set()
    for record in log.epochs:
        intensity = record.get("intensity")
        if isinstance(intensity, dict):
            labels.add((intensity.get("zone"), intensity.get("source"), intensity.get("kind")))
    if len(labels) > 1:
        zones = sorted({str(z) for z, _, _ in labels})
        base["zone"] = "/".join(zones) if len(zones) > 1 else zones[0]
        base["source"] = "mixed: " + "; ".join(sorted({str(s) for _, s, _ in labels}))
        base["kind"] = "mixed"
    return base


def _row(figure: RunFigure, log: RunLog, car_basis: str, notes: list[str]) -> RunRow:
    totals = log.totals()
    by_component = component_energy_kwh(log)
    methods = component_methods(log)
    intensity = _intensity_of(log)
    effective = figure.co2_g / figure.energy_kwh if figure.energy_kwh > 0 else None
    if effective is None:
        effective = _number(intensity.get("intensity_g_per_kwh"))
    prediction = log.latest_prediction or {}
    pue = _number(log.header.get("pue"))
    pue_detail = str(log.header.get("pue_detail") or ("recorded in the run log" if pue else ""))
    source_format = str(log.header.get("source_format") or "carbon_callbacks")
    kind = intensity.get("kind")
    if kind == "fallback":
        notes = [*notes, "world-average intensity used because the location was unknown"]
    measured_components = {c for c in methods if c in COMPONENTS} | set(by_component)
    return RunRow(
        run=log.run_name or log.run_id or log.path.name,
        run_id=log.run_id,
        path=str(log.path),
        source_format=source_format,
        writer_version=_text(
            log.header.get("carbontracker_version")
            if source_format == "carbontracker"
            else log.header.get("package_version")
        ),
        started_at=log.header.get("started_at"),
        status=figure.status,
        basis=figure.basis,
        basis_reason=figure.reason,
        epochs=figure.epochs,
        planned_epochs=figure.planned_epochs,
        duration_s=figure.duration_s,
        energy_kwh=figure.energy_kwh,
        co2_g=figure.co2_g,
        energy_kwh_gpu=by_component.get("gpu", 0.0) if "gpu" in measured_components else None,
        energy_kwh_cpu=by_component.get("cpu", 0.0) if "cpu" in measured_components else None,
        energy_kwh_dram=by_component.get("dram", 0.0) if "dram" in measured_components else None,
        methods="; ".join(f"{c}: {'>'.join(m)}" for c, m in sorted(methods.items())),
        intensity_g_per_kwh=effective,
        intensity_zone=intensity.get("zone"),
        intensity_source=intensity.get("source"),
        intensity_kind=kind,
        intensity_year=intensity.get("year"),
        pue=pue,
        pue_detail=pue_detail,
        km_by_car=km_by_car(max(figure.co2_g, 0.0), car_basis).value,
        measured_energy_kwh=float(totals["energy_kwh"]),
        measured_co2_g=float(totals["co2_g"]),
        measured_duration_s=float(totals["duration_s"]),
        measured_epochs=int(totals["epochs"]),
        predicted_energy_kwh=_number(prediction.get("energy_kwh")),
        predicted_energy_kwh_low=_number(prediction.get("energy_kwh_low")),
        predicted_energy_kwh_high=_number(prediction.get("energy_kwh_high")),
        predicted_co2_g=_number(prediction.get("co2_g")),
        predicted_epochs=prediction.get("epochs")
        if isinstance(prediction.get("epochs"), int)
        else None,
        notes="; ".join(notes),
    )


def _describe_intensity(row: RunRow) -> str:
    value = sig(row.intensity_g_per_kwh)
    year = f" {row.intensity_year}" if row.intensity_year else ""
    kind = f"{str(row.intensity_kind).replace('_', ' ')}{year}; " if row.intensity_kind else ""
    return f"{row.intensity_zone} {value} gCO2eq/kWh ({kind}{row.intensity_source})"


def _method_paragraph(rows: list[RunRow], by_basis: dict[str, int], car_basis: str) -> str:
    if not rows:
        return "No run could be counted."
    parts: list[str] = []
    native = [r for r in rows if r.source_format != "carbontracker"]
    foreign = [r for r in rows if r.source_format == "carbontracker"]
    if native:
        methods: dict[str, set[str]] = {}
        for row in native:
            for item in row.methods.split("; "):
                if ": " in item:
                    comp, how = item.split(": ", 1)
                    methods.setdefault(comp, set()).update(how.split(">"))
        described = "; ".join(
            f"{comp.upper()}: {', '.join(_method_words(comp, m) for m in sorted(how))}"
            for comp, how in sorted(methods.items())
        )
        parts.append(
            f"Energy was measured with carbon_callbacks{_versions(native)} "
            f"({described or 'no component measured'})."
        )
    if foreign:
        parts.append(
            f"{len(foreign)} run(s) were measured by carbontracker{_versions(foreign)} and read "
            "from its log files (its energy is mean sampled power x epoch duration, with its "
            "own PUE)."
        )
    pues = sorted({round(r.pue, 3) for r in rows if r.pue is not None})
    if pues:
        pue_text = ", ".join(f"{p:g}" for p in pues)
        parts.append(
            f"The energy includes a power usage effectiveness (PUE) of {pue_text}"
            + (" (per run)" if len(pues) > 1 else "")
            + "."
        )
    intensities = sorted({_describe_intensity(r) for r in rows})
    if len(intensities) == 1:
        parts.append(f"CO2eq was computed with the carbon intensity {intensities[0]}.")
    else:
        shown = "; ".join(intensities[:4])
        more = f"; and {len(intensities) - 4} more" if len(intensities) > 4 else ""
        parts.append(f"CO2eq was computed with per-run carbon intensities: {shown}{more}.")
    counted = (
        f"{len(rows)} run(s) are counted: {by_basis.get('measured', 0)} measured in full"
        f", {by_basis.get('predicted', 0)} predicted for their whole length from the epochs "
        f"measured (latest prediction)"
        f", {by_basis.get('partial', 0)} counted as measured so far (incomplete, no prediction)."
    )
    parts.append(counted)
    car = CAR_FACTORS[car_basis]
    parts.append(f"The car equivalent uses {car.co2_g_per_km:g} gCO2/km ({car.source}).")
    return " ".join(parts)


def statement_text(energy_kwh: float, co2_g: float, car_basis: str = DEFAULT_CAR_BASIS) -> str:
    """The seeds' sentence for a total: kWh, kg (g under 1 kg) CO2eq and km by car."""
    km = km_by_car(max(co2_g, 0.0), car_basis).value
    if co2_g >= 1000.0:
        co2_text = f"{paper_number(co2_g / 1000.0)} kg"
    else:
        co2_text = f"{paper_number(co2_g)} g"
    return (
        f"The training of models in this work is estimated to use {paper_number(energy_kwh)} kWh "
        f"of electricity contributing to {co2_text} of CO2eq. This is equivalent to "
        f"{paper_number(km)} km travelled by car."
    )


def build_report(collected: Collected, *, car_basis: str = DEFAULT_CAR_BASIS) -> Report:
    """The report for the logs collected (see the module docstring).

    Raises:
        ValueError: unknown ``car_basis``.
    """
    if car_basis not in CAR_FACTORS:
        raise ValueError(f"car_basis must be one of {sorted(CAR_FACTORS)}, got {car_basis!r}")
    aggregate = aggregate_runs(collected.logs)
    by_path = {log.path: log for log in collected.logs}
    notes_by_path: dict[Path, list[str]] = {}
    for path, note in collected.notes:
        notes_by_path.setdefault(path, []).append(note)
    rows = [
        _row(figure, by_path[figure.path], car_basis, notes_by_path.get(figure.path, []))
        for figure in aggregate.runs
    ]
    by_basis = aggregate.by_basis()
    return Report(
        rows=rows,
        energy_kwh=aggregate.energy_kwh,
        co2_g=aggregate.co2_g,
        duration_s=aggregate.duration_s,
        by_basis=by_basis,
        equivalents=report_equivalents(max(aggregate.co2_g, 0.0), car_basis),
        statement=statement_text(aggregate.energy_kwh, aggregate.co2_g, car_basis),
        method=_method_paragraph(rows, by_basis, car_basis),
        car_basis=car_basis,
        not_counted=[(str(p), r) for p, r in aggregate.skipped],
        skipped=[(str(p), r) for p, r in collected.skipped],
        notes=[(str(p), n) for p, n in collected.notes],
        generated_at=utc_iso(time.time()),
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

#: (heading, cell) of the table in text and Markdown.
_TABLE: list[tuple[str, Any]] = [
    ("Run", lambda r: r.run),
    ("Status", lambda r: r.status or "no footer"),
    ("Counted as", lambda r: r.basis),
    ("Epochs", lambda r: "-" if r.epochs is None else str(r.epochs)),
    ("Duration", lambda r: format_duration(r.duration_s)),
    ("kWh", lambda r: sig(r.energy_kwh)),
    ("meas. GPU kWh", lambda r: sig(r.energy_kwh_gpu)),
    ("meas. CPU kWh", lambda r: sig(r.energy_kwh_cpu)),
    ("meas. DRAM kWh", lambda r: sig(r.energy_kwh_dram)),
    ("gCO2eq", lambda r: sig(r.co2_g)),
    ("g/kWh", lambda r: f"{sig(r.intensity_g_per_kwh)} {r.intensity_zone or ''}".strip()),
    ("PUE", lambda r: sig(r.pue, 3)),
    ("km by car", lambda r: sig(r.km_by_car)),
    ("Measured kWh", lambda r: sig(r.measured_energy_kwh)),
    ("Predicted kWh [interval]", lambda r: _predicted_cell(r)),
]


def _predicted_cell(row: RunRow) -> str:
    if row.predicted_energy_kwh is None:
        return "-"
    text = sig(row.predicted_energy_kwh)
    if row.predicted_energy_kwh_low is not None and row.predicted_energy_kwh_high is not None:
        text += f" [{sig(row.predicted_energy_kwh_low)}..{sig(row.predicted_energy_kwh_high)}]"
    return text


def _total_cells(report: Report) -> list[str]:
    cells = ["TOTAL", "", "", "", format_duration(report.duration_s), sig(report.energy_kwh)]
    cells += ["", "", "", sig(report.co2_g)]
    intensity = report.co2_g / report.energy_kwh if report.energy_kwh > 0 else None
    cells += [sig(intensity), "", sig(km_by_car(max(report.co2_g, 0.0), report.car_basis).value)]
    cells += ["", ""]
    return cells


def _aligned(headings: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headings)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _listing(title: str, items: Iterable[tuple[str, str]]) -> list[str]:
    entries = list(items)
    if not entries:
        return []
    return ["", f"{title}:", *(f"  {path}: {reason}" for path, reason in entries)]


def render_text(report: Report) -> str:
    """Plain-text report: table, totals, statement, method, equivalents, caveats."""
    headings = [h for h, _ in _TABLE]
    body = [[cell(row) for _, cell in _TABLE] for row in report.rows]
    body.append(_total_cells(report))
    lines = [f"Runs ({report.runs_counted} counted)", _aligned(headings, body), ""]
    lines.append("Intensity per run:")
    lines += [f"  {row.run}: {_describe_intensity(row)}" for row in report.rows]
    lines += ["", "Statement:", report.statement, "", "Method:", report.method, ""]
    lines.append("Equivalents of the total:")
    lines += [f"  {e.describe()}" for e in report.equivalents]
    lines += _listing("Counted with caveats", [(r.run, r.notes) for r in report.rows if r.notes])
    lines += _listing("Read but not counted", report.not_counted)
    lines += _listing("Skipped (not usable)", report.skipped)
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """Markdown report: the same content, with a pipe table."""
    headings = [h for h, _ in _TABLE]
    lines = [
        "## Energy and carbon footprint",
        "",
        "| " + " | ".join(headings) + " |",
        "|" + "|".join("---" for _ in headings) + "|",
    ]
    for row in report.rows:
        lines.append("| " + " | ".join(_md_escape(cell(row)) for _, cell in _TABLE) + " |")
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in _total_cells(report)) + " |")
    lines += [
        "",
        report.statement,
        "",
        f"*Method.* {report.method}",
        "",
        "Equivalents of the total:",
        "",
    ]
    lines += [f"- {_md_escape(e.describe())}" for e in report.equivalents]
    lines += ["", "Intensity per run:", ""]
    lines += [
        f"- {_md_escape(row.run)}: {_md_escape(_describe_intensity(row))}" for row in report.rows
    ]
    for title, items in (
        ("Counted with caveats", [(r.run, r.notes) for r in report.rows if r.notes]),
        ("Read but not counted", report.not_counted),
        ("Skipped (not usable)", report.skipped),
    ):
        if items:
            lines += ["", f"{title}:", ""]
            lines += [f"- `{_md_escape(p)}`: {_md_escape(r)}" for p, r in items]
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """JSON (``schema`` :data:`JSON_SCHEMA`); non-finite numbers become null."""
    return json.dumps(_finite(report.to_dict()), indent=2, ensure_ascii=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


#: CSV columns: ``row_type`` (``run`` or ``total``), then every :class:`RunRow` field.
CSV_COLUMNS = ["row_type", *RunRow.__dataclass_fields__]


def render_csv(report: Report) -> str:
    """CSV: one ``run`` row per counted run and one ``total`` row (energy, CO2eq, duration)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({"row_type": "run", **{k: _csv_cell(v) for k, v in row.to_dict().items()}})
    writer.writerow(
        {
            "row_type": "total",
            "run": "TOTAL",
            "duration_s": report.duration_s,
            "energy_kwh": report.energy_kwh,
            "co2_g": report.co2_g,
            "km_by_car": km_by_car(max(report.co2_g, 0.0), report.car_basis).value,
            "notes": f"{report.runs_counted} runs; "
            + ", ".join(f"{k} {v}" for k, v in report.by_basis.items()),
        }
    )
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def render(report: Report, fmt: str = "text") -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`).

    Raises:
        ValueError: unknown format.
    """
    renderers = {
        "text": render_text,
        "markdown": render_markdown,
        "json": render_json,
        "csv": render_csv,
    }
    if fmt not in renderers:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return renderers[fmt](report)


__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "JSON_SCHEMA",
    "Report",
    "RunRow",
    "build_report",
    "component_energy_kwh",
    "component_methods",
    "format_duration",
    "paper_number",
    "render",
    "render_csv",
    "render_json",
    "render_markdown",
    "render_text",
    "sig",
    "statement_text",
]
