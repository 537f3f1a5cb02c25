"""Estimate a run before it runs, from the packaged TDP tables: an estimate, labelled as one.

``energy (kWh) = (GPU TDP x GPUs + CPU TDP x sockets) (W) x utilisation x hours / 1000 x PUE``
and ``CO2eq (g) = energy x intensity``. TDP (board power for GPUs) is the vendor's ceiling, not
a measurement: real training often draws less (data loading, small batches) and a CPU can exceed
its TDP under turbo, so the figure is an upper-end guess with full utilisation (the default, as
the ML Emissions Calculator assumes). DRAM, storage and networking are not included. Use it to
plan; report measured figures.

GPU names are matched as :func:`~carbon_callbacks.core.tables.lookup_gpu_tdp_w` matches NVML's
names (``"A100"``, ``"A100 PCIe"``, ``"NVIDIA H100 80GB HBM3"``); CPU names as
:func:`~carbon_callbacks.core.sensors.cpu_model.lookup_cpu_tdp_w` does. A name that matches no
row raises :class:`UnknownHardwareError` with the nearest table names.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from carbon_callbacks.core.equivalents import DEFAULT_CAR_BASIS, Equivalent, report_equivalents
from carbon_callbacks.core.intensity.base import IntensityEstimate
from carbon_callbacks.core.intensity.static import world_average, zone_value
from carbon_callbacks.core.sensors.cpu_model import lookup_cpu_tdp_w, normalise_cpu_name
from carbon_callbacks.core.tables import cpu_tdp_table, gpu_tdp_table, lookup_gpu_tdp_w

#: Label every estimate carries.
ESTIMATE_LABEL = "ESTIMATE (before running; from TDP tables, not measured)"
_BRAND_WORDS = {"NVIDIA", "TESLA", "GEFORCE", "QUADRO", "GPU", "GRAPHICS"}
_VARIANT = re.compile(r"^(SXM\d*|PCIE|NVL|\d+GB|HBM\w*)$")


class UnknownHardwareError(ValueError):
    """A GPU or CPU model that the packaged table does not have.

    Attributes:
        kind: ``"gpu"`` or ``"cpu"``.
        name: the name as given.
        suggestions: the nearest table names, best first (possibly empty).
    """

    def __init__(self, kind: str, name: str, suggestions: list[str]) -> None:
        table = "gpu_tdp.csv" if kind == "gpu" else "cpu_tdp.csv"
        if suggestions:
            hint = f" Nearest names: {', '.join(suggestions)}. Use one of those names"
        else:
            hint = f" No table name is close; list them with --list-{kind}s"
        super().__init__(
            f"{kind.upper()} model {name!r} is not in the packaged table {table}.{hint}, "
            f"or give the power yourself with --{kind}-tdp WATTS."
        )
        self.kind = kind
        self.name = name
        self.suggestions = suggestions


@dataclass(frozen=True)
class HardwarePart:
    """One kind of device in the estimate.

    Attributes:
        kind: ``"gpu"`` or ``"cpu"``.
        query: the name as given.
        name: the table row it matched (or the query, for a user-stated TDP).
        tdp_w: watts per device.
        count: devices (GPUs, or CPU sockets).
        source: where the watts come from.
        also_matching: other table rows the query could mean, ``"name (W)"``.
    """

    kind: str
    query: str
    name: str
    tdp_w: float
    count: int
    source: str
    also_matching: tuple[str, ...] = ()

    @property
    def power_w(self) -> float:
        """Watts of all devices of this kind at TDP."""
        return self.tdp_w * self.count


@dataclass
class Estimate:
    """An ex-ante estimate.

    Attributes:
        parts: the GPUs and CPUs counted.
        hours: wall-clock hours.
        utilisation: fraction of TDP drawn (0..1].
        pue: power usage effectiveness applied.
        intensity: the carbon intensity applied, with provenance.
        power_w: IT power in W (all parts x utilisation).
        energy_kwh: kWh including PUE.
        co2_g: grams CO2eq.
        equivalents: km by car, phone charges, seedlings, 1.5 °C budget share.
        label: :data:`ESTIMATE_LABEL`.
        caveats: what the estimate leaves out.
    """

    parts: list[HardwarePart]
    hours: float
    utilisation: float
    pue: float
    intensity: IntensityEstimate
    power_w: float
    energy_kwh: float
    co2_g: float
    equivalents: list[Equivalent]
    label: str = ESTIMATE_LABEL
    caveats: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "label": self.label,
            "hours": self.hours,
            "utilisation": self.utilisation,
            "pue": self.pue,
            "parts": [
                {
                    "kind": p.kind,
                    "query": p.query,
                    "name": p.name,
                    "tdp_w": p.tdp_w,
                    "count": p.count,
                    "source": p.source,
                    "also_matching": list(p.also_matching),
                }
                for p in self.parts
            ],
            "power_w": self.power_w,
            "energy_kwh": self.energy_kwh,
            "co2_g": self.co2_g,
            "intensity": self.intensity.to_dict(),
            "equivalents": [e.to_dict() for e in self.equivalents],
            "caveats": list(self.caveats),
        }


@functools.cache
def _gpu_sources() -> dict[str, str]:
    """GPU row name -> the datasheet the row cites (the table's ``source`` column)."""
    text = (resources.files("carbon_callbacks") / "data" / "gpu_tdp.csv").read_text("utf-8")
    return {
        (row.get("name") or "").strip(): (row.get("source") or "").strip()
        for row in csv.DictReader(io.StringIO(text))
    }


def _gpu_words(name: str) -> list[str]:
    text = re.sub(r"[^A-Za-z0-9+]+", " ", name).upper()
    words = [w for w in text.split() if w not in _BRAND_WORDS]
    return ["SXM" if w.startswith("SXM") else w for w in words]


def _model_words(name: str) -> list[str]:
    return [w for w in _gpu_words(name) if not _VARIANT.match(w)]


def suggest_gpus(name: str, limit: int = 5) -> list[str]:
    """Table GPU names nearest to ``name``: shared model words first, then spelling."""
    words = set(_model_words(name))
    query = " ".join(_gpu_words(name))
    model_query = " ".join(_model_words(name))
    scored = []
    for row in gpu_tdp_table():
        row_words = set(_gpu_words(row))
        shared = len(words & row_words)
        ratio = max(
            difflib.SequenceMatcher(None, query, " ".join(_gpu_words(row))).ratio(),
            difflib.SequenceMatcher(None, model_query, " ".join(_model_words(row))).ratio(),
        )
        scored.append((shared + ratio, ratio, row))
    scored.sort(key=lambda item: (-item[0], item[2]))
    return [row for score, ratio, row in scored if score >= 0.5][:limit]


def suggest_cpus(name: str, limit: int = 5) -> list[str]:
    """Table CPU names nearest to ``name`` (by their normalised spelling)."""
    table = cpu_tdp_table()
    by_key: dict[str, str] = {}
    for row in table:
        by_key.setdefault(normalise_cpu_name(row), row)
    matches = difflib.get_close_matches(normalise_cpu_name(name), list(by_key), n=limit, cutoff=0.5)
    return [by_key[m] for m in matches]


def match_gpu(name: str, count: int = 1, tdp_w: float | None = None) -> HardwarePart:
    """The GPU row for ``name`` (or a user-stated ``tdp_w``).

    Raises:
        UnknownHardwareError: no row matches and no ``tdp_w`` is given.
        ValueError: ``count`` < 1 or a bad ``tdp_w``.
    """
    count = _check_count(count, "GPU count")
    if tdp_w is not None:
        return HardwarePart(
            "gpu", name, name, _check_watts(tdp_w, "--gpu-tdp"), count, "user-stated TDP"
        )
    hit = lookup_gpu_tdp_w(name)
    if hit is None:
        raise UnknownHardwareError("gpu", name, suggest_gpus(name))
    watts, row = hit
    model = set(_model_words(name))
    variant = set(_gpu_words(name)) - model
    others = tuple(
        f"{other} ({w:g} W)"
        for other, w in sorted(gpu_tdp_table().items())
        if other != row and set(_model_words(other)) == model and variant <= set(_gpu_words(other))
    )
    source = _gpu_sources().get(row) or "NVIDIA datasheets"
    return HardwarePart("gpu", name, row, watts, count, f"packaged gpu_tdp.csv: {source}", others)


def match_cpu(name: str, count: int = 1, tdp_w: float | None = None) -> HardwarePart:
    """The CPU row for ``name`` (or a user-stated ``tdp_w``); ``count`` is sockets.

    Raises:
        UnknownHardwareError: no row matches and no ``tdp_w`` is given.
        ValueError: ``count`` < 1 or a bad ``tdp_w``.
    """
    count = _check_count(count, "CPU count")
    if tdp_w is not None:
        return HardwarePart(
            "cpu", name, name, _check_watts(tdp_w, "--cpu-tdp"), count, "user-stated TDP"
        )
    hit = lookup_cpu_tdp_w(name)
    if hit is None:
        raise UnknownHardwareError("cpu", name, suggest_cpus(name))
    watts, row = hit
    return HardwarePart(
        "cpu",
        name,
        row,
        watts,
        count,
        "packaged cpu_tdp.csv: vendor specification pages (Intel ARK, AMD), per socket",
    )


def _check_count(count: int, what: str) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {count!r}")
    return count


def _check_watts(value: float, what: str) -> float:
    watts = float(value)
    if not math.isfinite(watts) or watts <= 0:
        raise ValueError(f"{what} must be a number of watts > 0, got {value!r}")
    return watts


def estimate(
    *,
    hours: float,
    gpu: str | None = None,
    count: int = 1,
    gpu_tdp_w: float | None = None,
    cpu: str | None = None,
    cpu_count: int = 1,
    cpu_tdp_w: float | None = None,
    zone: str | None = None,
    intensity_g_per_kwh: float | None = None,
    pue: float = 1.0,
    utilisation: float = 1.0,
    car_basis: str = DEFAULT_CAR_BASIS,
) -> Estimate:
    """Estimate energy and CO2eq of ``hours`` on the given hardware (see the module docstring).

    Args:
        hours: wall-clock hours (> 0).
        gpu / count / gpu_tdp_w: GPU model, number of GPUs, and optionally its watts.
        cpu / cpu_count / cpu_tdp_w: CPU model, sockets, and optionally its watts.
        zone: where the electricity comes from (``"DK"``, ``"US-CA"``); default the world
            average, labelled as such.
        intensity_g_per_kwh: a known intensity instead of a zone's.
        pue: power usage effectiveness (>= 1).
        utilisation: fraction of TDP drawn, in (0, 1].

    Raises:
        ValueError: no hardware, or a value out of range.
        UnknownHardwareError: a model not in the tables (with the nearest names).
        UnknownZoneError: an unknown zone.
    """
    hours_f = float(hours)
    if not math.isfinite(hours_f) or hours_f <= 0:
        raise ValueError(f"hours must be a number > 0, got {hours!r}")
    if gpu is None and cpu is None:
        raise ValueError("give at least one of --gpu MODEL or --cpu MODEL")
    pue_f = float(pue)
    if not math.isfinite(pue_f) or pue_f < 1.0:
        raise ValueError(f"pue must be a number >= 1.0, got {pue!r}")
    util = float(utilisation)
    if not 0 < util <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation!r}")
    parts = []
    if gpu is not None:
        parts.append(match_gpu(gpu, count, gpu_tdp_w))
    if cpu is not None:
        parts.append(match_cpu(cpu, cpu_count, cpu_tdp_w))
    caveats = [
        "TDP is a ceiling: measured training power is often lower, and CPUs can exceed TDP "
        "under turbo",
        "DRAM, storage, networking and idle hosts are not included",
    ]
    if intensity_g_per_kwh is not None:
        value = float(intensity_g_per_kwh)
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"intensity must be a number >= 0 gCO2eq/kWh, got {intensity_g_per_kwh!r}"
            )
        intensity = IntensityEstimate(value, zone or "USER", "user-stated value", kind="user")
    elif zone is not None:
        intensity = zone_value(zone)
    else:
        intensity = world_average(fallback=True)
        caveats.append("no --zone given: the world average intensity is used")
    power_w = sum(p.power_w for p in parts) * util
    energy_kwh = power_w * hours_f / 1000.0 * pue_f
    co2_g = energy_kwh * intensity.intensity_g_per_kwh
    return Estimate(
        parts=parts,
        hours=hours_f,
        utilisation=util,
        pue=pue_f,
        intensity=intensity,
        power_w=power_w,
        energy_kwh=energy_kwh,
        co2_g=co2_g,
        equivalents=report_equivalents(co2_g, car_basis),
        caveats=caveats,
    )


def render_estimate(result: Estimate) -> str:
    """The estimate as text, labelled, with every input's source."""
    lines = [result.label, ""]
    for part in result.parts:
        what = "GPU" if part.kind == "gpu" else "CPU socket"
        lines.append(
            f"  {part.count} x {what} {part.name!r} at {part.tdp_w:g} W ({part.source})"
            + (f"  [asked for {part.query!r}]" if part.query != part.name else "")
        )
        if part.also_matching:
            lines.append(f"    other rows for {part.query!r}: {', '.join(part.also_matching)}")
    lines += [
        f"  Utilisation: {result.utilisation:g} of TDP;  PUE: {result.pue:g};  "
        f"hours: {result.hours:g}",
        f"  IT power: {result.power_w:g} W",
        f"  Intensity: {result.intensity.describe()}",
        "",
        f"  Energy: {result.energy_kwh:.4g} kWh",
        f"  CO2eq:  {result.co2_g:.4g} g ({result.co2_g / 1000:.4g} kg)",
        "  Equivalent to:",
        *(f"    {e.describe()}" for e in result.equivalents),
        "",
        "  Caveats: " + "; ".join(result.caveats) + ".",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "ESTIMATE_LABEL",
    "Estimate",
    "HardwarePart",
    "UnknownHardwareError",
    "estimate",
    "match_cpu",
    "match_gpu",
    "render_estimate",
    "suggest_cpus",
    "suggest_gpus",
]
