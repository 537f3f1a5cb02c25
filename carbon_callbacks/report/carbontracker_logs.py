"""Read carbontracker's own log files into this package's run-log shape, for reports and sums.

carbontracker (https://github.com/saintslab/carbontracker, formerly lfwa/carbontracker) writes,
per tracker, a *standard* log ``<prefix><pid>.<rand>_<YYYY-MM-DDTHHMMSSZ>_carbontracker.log``
(older versions: ``<YYYY-MM-DDTHH:MMZ>_carbontracker.log``) and an *output* log with the same
stem ending ``_carbontracker_output.log`` (plus an ``_err.log`` not read here). Each line starts
``YYYY-mm-dd HH:MM:SS`` (local time) and ``" - "``; a message may continue on further lines.

What is taken from them:

- output log: the blocks ``Actual consumption for N epoch(s):`` (or ``Actual consumption:`` when
  carbontracker wrapped a command) and ``Predicted consumption for N epoch(s):``, each with
  ``Time:`` (``H:MM:SS[.ffffff]``, possibly ``D day(s), H:MM:SS``), ``Energy: X kWh`` (PUE
  included by carbontracker), ``CO2eq: Y g`` and optional equivalents. The last block of each
  kind counts.
- standard log: ``carbontracker version V``; ``... multiplied by a PUE coefficient of P``;
  ``The following components were found: GPU with
  device(s) A, B. CPU with device(s) cpu:0.``; per epoch ``Epoch N:``, ``Duration: H:MM:SS``
  and ``Average power usage (W) for gpu: [w1 w2]`` (a NumPy array print, possibly wrapped over
  lines, or ``None`` when no sample was taken); ``Training was interrupted``; ``Average carbon
  intensity during training was X gCO2/kWh at detected location: L.``

Each log pair becomes a :class:`~carbon_callbacks.core.runlog.RunLog` with a header
(``source_format = "carbontracker"``), one epoch record per ``Epoch`` entry, one prediction and
a footer, so :func:`~carbon_callbacks.core.runlog.aggregate_runs` counts it by the same rule as
carbontracker's own aggregate: the actual figures when every planned epoch was monitored or the
run was stopped early, else the prediction. Provenance is kept: per-epoch energy is
carbontracker's own method (mean sampled power x epoch duration, per component) and is labelled
so; the PUE is the one the log states (version 2.x), else the one implied by it (actual kWh over
the epochs' IT energy), else carbontracker's documented constant 1.58, labelled as assumed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from carbon_callbacks.core.runlog import PathLike, RunLog, RunLogError
from carbon_callbacks.core.units import J_PER_KWH

#: Suffix of carbontracker's standard log.
STD_SUFFIX = "carbontracker.log"
#: Suffix of carbontracker's output log.
OUTPUT_SUFFIX = "carbontracker_output.log"
#: carbontracker's hard-coded PUE in version 2.x (``constants.PUE_2023``, Uptime Institute).
CARBONTRACKER_PUE = 1.58
#: Value of ``header["source_format"]`` for logs read by this module.
SOURCE_FORMAT = "carbontracker"

_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:[,.]\d+)?\s+-\s+")
_LEVEL_PREFIX = re.compile(r"^(?:[\w.-]+\s+-\s+)?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+-\s+")
_TIMEDELTA = re.compile(r"(?:(\d+)\s+days?,\s*)?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|NaN|inf)"
_BLOCK_HEAD = re.compile(
    r"(Actual|Predicted) consumption(?: for (\d+) epoch\(s\))?:", re.IGNORECASE
)
_TIME = re.compile(r"^\s*Time:\s*(.+?)\s*$", re.IGNORECASE)
_ENERGY = re.compile(r"^\s*Energy:\s*" + _NUMBER + r"\s*kWh", re.IGNORECASE)
_CO2 = re.compile(r"^\s*CO2eq:\s*" + _NUMBER + r"\s*g\b", re.IGNORECASE)
_EQUIV_HEAD = re.compile(r"^\s*This is equivalent to:\s*$", re.IGNORECASE)
_EQUIV_LINE = re.compile(r"^\s*" + _NUMBER + r"\s+(\S.*?)\s*$")
_VERSION = re.compile(r"carbontracker version (\S+)", re.IGNORECASE)
_COMPONENTS = re.compile(r"The following components were found:(.*)$")
_COMPONENT = re.compile(r"\s*(\w+) with device\(s\) (.*?)\.(?=\s+\w+ with device|\s*$)")
_EPOCH = re.compile(r"^Epoch (\d+):\s*$")
_DURATION = re.compile(r"^Duration:\s*(.+?)\s*$")
_POWER = re.compile(r"^Average power usage \(W\) for (\w+):\s*(.*)$")
_INTERRUPTED = re.compile(r"Training was interrupted", re.IGNORECASE)
_AVG_INTENSITY = re.compile(
    r"Average carbon intensity during training was " + _NUMBER + r"\s*gCO2/kWh"
    r"(?: at detected location: (.*?))?\.?\s*$",
    re.IGNORECASE,
)
_OTHER_INTENSITY = re.compile(
    r"(?:is predicted to be|Carbon intensity:)\s*" + _NUMBER + r"\s*gCO2/kWh"
    r"(?: at (?:detected location: )?(.*?))?\.?\s*$",
    re.IGNORECASE,
)
_DEFAULTED = re.compile(r"Defaulted to|default", re.IGNORECASE)
_PUE_LINE = re.compile(r"PUE coefficient of " + _NUMBER, re.IGNORECASE)


@dataclass(frozen=True)
class CarbontrackerLogPair:
    """One tracker's files: the standard log and the output log (either may be missing).

    Attributes:
        stem: the shared start of both file names (``"1234.5678_2024-03-26T105926Z_"``).
        standard: the ``..._carbontracker.log`` file, or None.
        output: the ``..._carbontracker_output.log`` file, or None.
    """

    stem: str
    standard: Path | None
    output: Path | None

    @property
    def path(self) -> Path:
        """The file that names this pair in reports (the output log, else the standard log)."""
        chosen = self.output or self.standard
        assert chosen is not None
        return chosen


@dataclass
class Consumption:
    """One ``Actual``/``Predicted consumption`` block of an output log.

    Attributes:
        kind: ``"actual"`` or ``"predicted"``.
        epochs: the N of ``for N epoch(s)``; None when the block names none (command mode).
        duration_s: seconds (``Time:``), or None when unparsable.
        energy_kwh: kWh as carbontracker printed it (its PUE included), or None.
        co2_g: grams CO2eq, or None (carbontracker prints ``nan`` when it had no intensity).
        equivalents: ``{unit: value}`` from ``This is equivalent to:``.
        logged_at: the block's time stamp (local time, as carbontracker writes it), or None.
    """

    kind: str
    epochs: int | None
    duration_s: float | None = None
    energy_kwh: float | None = None
    co2_g: float | None = None
    equivalents: dict[str, float] = field(default_factory=dict)
    logged_at: str | None = None


@dataclass
class StandardLogInfo:
    """What the standard log says.

    Attributes:
        version: carbontracker's version, or None.
        pue: the PUE coefficient it states (``... multiplied by a PUE coefficient of 1.58``),
            or None (versions before 2.x do not state it).
        devices: component (``"gpu"``, ``"cpu"``) -> device names.
        epochs: per logged epoch: ``(number, duration_s or None, {component: [W per device]})``.
        interrupted: True when ``Training was interrupted`` was logged (``stop()`` early).
        intensity_g_per_kwh: the average intensity it applied (else the last fetched or
            predicted one it logged), or None.
        intensity_is_average: True when ``intensity_g_per_kwh`` is the logged average.
        location: the detected location it names, or None.
        intensity_defaulted: True when the log says a default intensity was used.
        first_stamp / last_stamp: first and last time stamps (local time), or None.
    """

    version: str | None = None
    pue: float | None = None
    devices: dict[str, list[str]] = field(default_factory=dict)
    epochs: list[tuple[int, float | None, dict[str, list[float]]]] = field(default_factory=list)
    interrupted: bool = False
    intensity_g_per_kwh: float | None = None
    intensity_is_average: bool = False
    location: str | None = None
    intensity_defaulted: bool = False
    first_stamp: str | None = None
    last_stamp: str | None = None


# --------------------------------------------------------------------------------------------
# Finding
# --------------------------------------------------------------------------------------------


def _kind_and_stem(name: str) -> tuple[str, str] | None:
    if name.endswith(OUTPUT_SUFFIX):
        return "output", name[: -len(OUTPUT_SUFFIX)]
    if name.endswith(STD_SUFFIX):
        return "standard", name[: -len(STD_SUFFIX)]
    return None


def is_carbontracker_log(path: PathLike) -> bool:
    """True when the file name is a carbontracker standard or output log name."""
    return _kind_and_stem(Path(path).name) is not None


def pair_carbontracker_files(files: Iterable[PathLike]) -> list[CarbontrackerLogPair]:
    """Pair standard and output logs by folder and stem; sorted by folder, then stem."""
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for entry in files:
        path = Path(entry)
        parsed = _kind_and_stem(path.name)
        if parsed is None:
            continue
        kind, stem = parsed
        groups.setdefault((path.parent, stem), {})[kind] = path
    return [
        CarbontrackerLogPair(stem, found.get("standard"), found.get("output"))
        for (_, stem), found in sorted(
            groups.items(), key=lambda item: (str(item[0][0]), item[0][1])
        )
    ]


def find_carbontracker_logs(folder: PathLike) -> list[CarbontrackerLogPair]:
    """carbontracker log pairs under ``folder`` (searched recursively; links not followed)."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in names:
            path = Path(root) / name
            if is_carbontracker_log(path) and path.is_file():
                files.append(path)
    return pair_carbontracker_files(files)


def partner_of(path: PathLike) -> CarbontrackerLogPair:
    """The pair a single carbontracker log file belongs to (its partner looked up beside it)."""
    file_path = Path(path)
    parsed = _kind_and_stem(file_path.name)
    if parsed is None:
        raise ValueError(f"{file_path} is not a carbontracker log file name")
    kind, stem = parsed
    std = file_path.parent / f"{stem}{STD_SUFFIX}"
    out = file_path.parent / f"{stem}{OUTPUT_SUFFIX}"
    return CarbontrackerLogPair(
        stem,
        file_path if kind == "standard" else (std if std.is_file() else None),
        file_path if kind == "output" else (out if out.is_file() else None),
    )


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_timedelta_s(text: str) -> float | None:
    """Seconds in ``str(datetime.timedelta)`` text: ``"0:02:21.900000"``, ``"1 day, 2:00:00"``."""
    match = _TIMEDELTA.search(text)
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _split_lines(text: str) -> list[tuple[str | None, str]]:
    """``(time stamp or None, message)`` per line; the ``time - [thread - level -]`` prefix and
    carbontracker's ``CarbonTracker:`` message prefix removed."""
    out: list[tuple[str | None, str]] = []
    for raw in text.splitlines():
        stamp = None
        line = raw
        match = _STAMP.match(line)
        if match:
            stamp = match.group(1)
            line = line[match.end() :]
            line = _LEVEL_PREFIX.sub("", line, count=1)
        line = re.sub(r"^\s*CarbonTracker:\s?", "", line)
        out.append((stamp, line))
    return out


def parse_output_log(text: str) -> dict[str, Consumption | None]:
    """The last ``actual`` and ``predicted`` consumption blocks of an output log's text."""
    found: dict[str, Consumption | None] = {"actual": None, "predicted": None}
    lines = _split_lines(text)
    current: Consumption | None = None
    in_equivalents = False
    last_stamp: str | None = None
    for stamp, line in lines:
        if stamp is not None:
            last_stamp = stamp
        head = _BLOCK_HEAD.search(line)
        if head:
            kind = "actual" if head.group(1).lower() == "actual" else "predicted"
            epochs = int(head.group(2)) if head.group(2) is not None else None
            current = Consumption(kind, epochs, logged_at=last_stamp)
            found[kind] = current
            in_equivalents = False
            continue
        if current is None:
            continue
        if stamp is not None and line.strip():
            current, in_equivalents = None, False  # a new log message ends the block
            continue
        if (m := _TIME.match(line)) is not None:
            current.duration_s = parse_timedelta_s(m.group(1))
        elif (m := _ENERGY.match(line)) is not None:
            current.energy_kwh = _float(m.group(1))
        elif (m := _CO2.match(line)) is not None:
            current.co2_g = _float(m.group(1))
        elif _EQUIV_HEAD.match(line):
            in_equivalents = True
        elif in_equivalents and (m := _EQUIV_LINE.match(line)) is not None:
            value = _float(m.group(1))
            if value is not None:
                current.equivalents[m.group(2)] = value
        elif not line.strip():
            continue
        else:
            current, in_equivalents = None, False
    return found


def _parse_power(text: str) -> list[float] | None:
    """``"[136.8 12.1]"`` / ``"136.8"`` -> watts per device; ``"None"`` -> None."""
    body = text.strip()
    if body in ("None", ""):
        return None
    numbers = [_float(tok) for tok in re.split(r"[\s,\[\]]+", body) if tok]
    values = [n for n in numbers if n is not None]
    return values if values else None


def parse_standard_log(text: str) -> StandardLogInfo:
    """What a standard log's text says (see :class:`StandardLogInfo`)."""
    info = StandardLogInfo()
    lines = _split_lines(text)
    current: list[Any] | None = None  # [number, duration, powers]
    pending_power: tuple[str, str] | None = None  # (component, text so far) of a wrapped array
    for stamp, line in lines:
        if stamp is not None:
            info.first_stamp = info.first_stamp or stamp
            info.last_stamp = stamp
        if pending_power is not None:
            comp, so_far = pending_power
            if stamp is None:
                so_far = f"{so_far} {line}"
                if "]" in line:
                    if current is not None:
                        current[2][comp] = _parse_power(so_far) or []
                    pending_power = None
                else:
                    pending_power = (comp, so_far)
                continue
            pending_power = None
        if info.version is None and (m := _VERSION.search(line)) is not None:
            info.version = m.group(1)
        if info.pue is None and (m := _PUE_LINE.search(line)) is not None:
            info.pue = _float(m.group(1))
        if (m := _COMPONENTS.search(line)) is not None:
            for comp, devices in _COMPONENT.findall(m.group(1)):
                info.devices[comp.lower()] = [d.strip() for d in devices.split(",") if d.strip()]
            continue
        if (m := _EPOCH.match(line.strip())) is not None:
            current = [int(m.group(1)), None, {}]
            info.epochs.append((current[0], None, current[2]))
            continue
        if (m := _DURATION.match(line.strip())) is not None and current is not None:
            current[1] = parse_timedelta_s(m.group(1))
            info.epochs[-1] = (current[0], current[1], current[2])
            continue
        if (m := _POWER.match(line.strip())) is not None:
            comp, value = m.group(1).lower(), m.group(2)
            if "[" in value and "]" not in value:
                pending_power = (comp, value)
            elif current is not None:
                current[2][comp] = _parse_power(value) or []
            continue
        if _INTERRUPTED.search(line):
            info.interrupted = True
        if (m := _AVG_INTENSITY.search(line)) is not None:
            info.intensity_g_per_kwh = _float(m.group(1))
            info.intensity_is_average = True
            info.location = m.group(2).strip() if m.group(2) else info.location
        elif (m := _OTHER_INTENSITY.search(line)) is not None and not info.intensity_is_average:
            info.intensity_g_per_kwh = _float(m.group(1))
            info.location = m.group(2).strip() if m.group(2) else info.location
        if "carbon intensity" in line.lower() and _DEFAULTED.search(line):
            info.intensity_defaulted = True
    return info


# --------------------------------------------------------------------------------------------
# Conversion to a RunLog
# --------------------------------------------------------------------------------------------


def _iso_local(stamp: str | None) -> str | None:
    if stamp is None:
        return None
    try:
        return datetime.strptime(stamp.replace("T", " "), "%Y-%m-%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


_EpochIt = tuple[int, "float | None", dict[str, float], dict[str, float]]


def read_carbontracker_log(pair: CarbontrackerLogPair) -> RunLog:
    """One carbontracker log pair as a :class:`RunLog` (see the module docstring).

    Raises:
        OSError: a file cannot be read.
        RunLogError: neither file holds an epoch or a consumption block.
    """
    std_text = _read_text(pair.standard)
    out_text = _read_text(pair.output)
    std = parse_standard_log(std_text) if std_text is not None else StandardLogInfo()
    blocks = parse_output_log(out_text) if out_text is not None else {}
    actual = blocks.get("actual")
    predicted = blocks.get("predicted")
    if actual is None and predicted is None and not std.epochs:
        raise RunLogError(
            f"{pair.path}: carbontracker log with no epoch and no consumption block "
            "(empty, or the run stopped before its first epoch)"
        )
    epoch_it = _epoch_energies(std)
    n_actual = actual.epochs if actual is not None else None
    if actual is not None and n_actual is None:
        n_actual = len(epoch_it) or 1  # command mode: "Actual consumption:" without a count
    counted = epoch_it[:n_actual] if n_actual is not None else epoch_it
    it_kwh = sum(sum(e[3].values()) for e in counted) / J_PER_KWH
    pue, pue_detail = _pue_of(std, actual, it_kwh)
    intensity = _intensity_of(std, actual, predicted)
    planned = predicted.epochs if predicted is not None else None
    if planned is None and actual is not None:
        planned = n_actual
    config: dict[str, Any] = {"monitor_epochs": -1, "epochs": planned}
    if (
        actual is not None
        and predicted is not None
        and n_actual is not None
        and planned is not None
        and n_actual < planned
        and not std.interrupted
    ):
        config["monitor_epochs"] = n_actual  # carbontracker stopped monitoring by design
    header = _header(pair, std, epoch_it, config, intensity, pue, pue_detail, planned)
    footer: dict[str, Any] | None = None
    if actual is not None and actual.energy_kwh is not None:
        footer = {
            "type": "footer",
            "status": "interrupted" if std.interrupted else "completed",
            "duration_s": actual.duration_s,
            "energy_kwh": actual.energy_kwh,
            "co2_g": actual.co2_g,
            "epochs_duration_s": actual.duration_s,
            "epochs_completed": n_actual,
            "epochs_monitored": n_actual,
            "epochs_planned": planned,
            "ended_at": _iso_local(actual.logged_at),
        }
    return RunLog(
        path=pair.path,
        header=header,
        epochs=_epoch_records(epoch_it, intensity, pue),
        predictions=_prediction_records(predicted, intensity),
        footer=footer,
    )


def _epoch_energies(std: StandardLogInfo) -> list[_EpochIt]:
    """Per epoch, carbontracker's method: (number, s, W per component, J = mean W x s)."""
    epoch_it: list[_EpochIt] = []
    for number, duration, powers in std.epochs:
        power_w = {comp: sum(values) for comp, values in powers.items() if values}
        energy_j = {
            comp: watts * duration for comp, watts in power_w.items() if duration is not None
        }
        epoch_it.append((number, duration, power_w, energy_j))
    return epoch_it


def _pue_of(std: StandardLogInfo, actual: Any, it_kwh: float) -> tuple[float, str]:
    """The PUE carbontracker applied (stated, implied by its totals, else its default)."""
    if std.pue is not None and 1.0 <= std.pue <= 3.0:
        return std.pue, "stated in the carbontracker log (its hard-coded PUE coefficient)"
    if actual is not None and actual.energy_kwh is not None and it_kwh > 0:
        implied = actual.energy_kwh / it_kwh
        if 1.0 <= implied <= 3.0:
            return implied, (
                "implied by the log: carbontracker's actual kWh over the epochs' mean power x "
                "duration (its hard-coded PUE, 1.58 in version 2.x)"
            )
    return CARBONTRACKER_PUE, (
        f"assumed: carbontracker's hard-coded PUE {CARBONTRACKER_PUE} (version 2.x)"
    )


def _intensity_of(std: StandardLogInfo, actual: Any, predicted: Any) -> dict[str, Any]:
    """The intensity record: the log's value, else its CO2eq / kWh, else unknown."""
    intensity_value = std.intensity_g_per_kwh
    kind: str | None
    if intensity_value is not None:
        source = (
            "carbontracker log: average carbon intensity during training"
            if std.intensity_is_average
            else "carbontracker log: the carbon intensity it fetched or predicted"
        )
        kind = "annual_average" if std.intensity_defaulted else "measured"
    else:
        ratio_from = actual if actual is not None else predicted
        if (
            ratio_from is not None
            and ratio_from.co2_g is not None
            and ratio_from.energy_kwh
            and ratio_from.energy_kwh > 0
        ):
            intensity_value = ratio_from.co2_g / ratio_from.energy_kwh
            source = "derived: carbontracker's reported CO2eq / energy"
        else:
            source = "not reported in the carbontracker log"
        kind = None
    return {
        "intensity_g_per_kwh": intensity_value,
        "zone": std.location or "unknown",
        "source": source,
        "basis": "unknown",
        "kind": kind,
        "year": None,
        "start_unix_s": None,
        "end_unix_s": None,
    }


def _header(
    pair: CarbontrackerLogPair,
    std: StandardLogInfo,
    epoch_it: list[_EpochIt],
    config: dict[str, Any],
    intensity: dict[str, Any],
    pue: float,
    pue_detail: str,
    planned: int | None,
) -> dict[str, Any]:
    """The header record of a carbontracker log pair, in this package's run-log shape."""
    components = sorted({c for e in epoch_it for c in e[2]} | set(std.devices))
    sensors = [
        {
            "name": f"{comp}:carbontracker",
            "component": comp if comp in ("gpu", "cpu", "dram") else "cpu",
            "device": ", ".join(std.devices.get(comp, [])) or comp,
            "method": "carbontracker",
            "detail": "carbontracker: mean of power samples x epoch duration "
            "(NVML power for GPUs; RAPL, powermetrics or TDP/2 for CPUs: not recorded in its log)",
        }
        for comp in components
    ]
    return {
        "type": "header",
        "schema": 1,
        "source_format": SOURCE_FORMAT,
        "carbontracker_version": std.version,
        "files": [str(p) for p in (pair.standard, pair.output) if p is not None],
        "run_id": f"carbontracker:{pair.stem.rstrip('_') or pair.path.name}",
        "run_name": pair.stem.rstrip("_") or None,
        "started_at": _iso_local(std.first_stamp),
        "started_at_is_local_time": True,
        "host": None,
        "config": config,
        "sensors": sensors,
        "intensity": intensity,
        "pue": pue,
        "pue_detail": pue_detail,
        "epochs": planned,
        "total_steps": None,
        "resumed_from": [],
        "offsets": {"energy_kwh": 0.0, "co2_g": 0.0, "duration_s": 0.0, "epochs": 0},
    }


def _epoch_records(
    epoch_it: list[_EpochIt], intensity: dict[str, Any], pue: float
) -> list[dict[str, Any]]:
    """The epoch records: kWh with PUE, g with the log's intensity, running totals."""
    intensity_value = intensity["intensity_g_per_kwh"]
    cumulative = {"energy_kwh": 0.0, "co2_g": 0.0, "duration_s": 0.0}
    records: list[dict[str, Any]] = []
    for index, (number, duration, power_w, energy_j) in enumerate(epoch_it):
        energy_kwh = sum(energy_j.values()) / J_PER_KWH * pue if energy_j else None
        co2_g = (
            energy_kwh * intensity_value
            if energy_kwh is not None and intensity_value is not None
            else None
        )
        total_w = sum(power_w.values()) if power_w else None
        cumulative["energy_kwh"] += energy_kwh or 0.0
        cumulative["co2_g"] += co2_g or 0.0
        cumulative["duration_s"] += duration or 0.0
        records.append(
            {
                "type": "epoch",
                "epoch": index,
                "carbontracker_epoch": number,
                "duration_s": duration,
                "energy_j": {f"{c}:carbontracker": j for c, j in energy_j.items()},
                "methods": {f"{c}:carbontracker": "carbontracker" for c in energy_j},
                "energy_kwh": energy_kwh,
                "co2_g": co2_g,
                "intensity": intensity,
                "pue": pue,
                "power_w": {**power_w, **({"total": total_w} if total_w is not None else {})},
                "cumulative": dict(cumulative),
            }
        )
    return records


def _prediction_records(predicted: Any, intensity: dict[str, Any]) -> list[dict[str, Any]]:
    """carbontracker's one prediction (planned epochs x mean epoch energy), without interval."""
    if predicted is None or predicted.energy_kwh is None:
        return []
    return [
        {
            "type": "prediction",
            "after_epochs": None,
            "epochs": predicted.epochs,
            "duration_s": predicted.duration_s,
            "energy_kwh": predicted.energy_kwh,
            "co2_g": predicted.co2_g,
            "duration_s_low": None,
            "duration_s_high": None,
            "energy_kwh_low": None,
            "energy_kwh_high": None,
            "co2_g_low": None,
            "co2_g_high": None,
            "method": "carbontracker: planned epochs x mean per-epoch energy of the "
            "monitored epochs (no interval)",
            "intensity": intensity,
        }
    ]


__all__ = [
    "CARBONTRACKER_PUE",
    "OUTPUT_SUFFIX",
    "SOURCE_FORMAT",
    "STD_SUFFIX",
    "CarbontrackerLogPair",
    "Consumption",
    "StandardLogInfo",
    "find_carbontracker_logs",
    "is_carbontracker_log",
    "pair_carbontracker_files",
    "parse_output_log",
    "parse_standard_log",
    "parse_timedelta_s",
    "partner_of",
    "read_carbontracker_log",
]
