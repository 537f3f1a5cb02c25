"""Gather run logs from files and folders: this package's run logs and carbontracker's logs.

:func:`collect_logs` finds every log under the paths given, reads each one, and says what it
could not use and why: a file that is not a log, or one without a header, is *skipped* and
listed; a log that was cut short (truncated last line, corrupt lines, no footer) is *kept* with a
note, because :func:`~carbon_callbacks.core.runlog.run_figure` counts it on a stated basis. A
``progress(done, total, path)`` callback sees every file as it is read (for long folders).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from carbon_callbacks.core.runlog import (
    LOG_SUFFIX,
    PathLike,
    RunLog,
    RunLogError,
    find_run_logs,
    read_run_log,
)
from carbon_callbacks.report.carbontracker_logs import (
    CarbontrackerLogPair,
    find_carbontracker_logs,
    is_carbontracker_log,
    partner_of,
    read_carbontracker_log,
)

#: ``progress(done, total, path)``: called after each log is read.
ProgressCallback = Callable[[int, int, Path], None]


@dataclass
class Collected:
    """Logs read from the paths given, and what went wrong.

    Attributes:
        logs: every log that could be read (this package's and carbontracker's), in the order
            found.
        skipped: ``(path, reason)`` per file or path that could not be used at all.
        notes: ``(path, note)`` per log that was read but is damaged or incomplete.
        paths_given: the paths as given.
    """

    logs: list[RunLog] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)
    paths_given: list[Path] = field(default_factory=list)


_Item = Path | CarbontrackerLogPair


def _items_under(path: Path, skipped: list[tuple[Path, str]]) -> list[_Item]:
    """The logs a given path stands for."""
    if path.is_dir():
        items: list[_Item] = list(find_run_logs([path]))
        items.extend(find_carbontracker_logs(path))
        if not items:
            skipped.append(
                (
                    path,
                    f"no run logs in this folder (looked for *{LOG_SUFFIX} and carbontracker's "
                    "*_carbontracker.log / *_carbontracker_output.log, recursively)",
                )
            )
        return items
    if not path.exists():
        skipped.append((path, "no such file or folder"))
        return []
    if is_carbontracker_log(path):
        return [partner_of(path)]
    return [path]


def _damage_notes(log: RunLog) -> list[str]:
    notes = []
    if log.truncated:
        notes.append("last line truncated (the writer was cut off); the line was ignored")
    if log.corrupt_lines:
        notes.append(f"{log.corrupt_lines} corrupt line(s) skipped")
    if log.footer is None:
        notes.append("no footer: the run was killed or is still running")
    missing = log.epoch_sums().get("missing_values", 0)
    if missing:
        notes.append(f"{missing} missing value(s) in epoch records")
    outside = [p for p in log.phases if p.get("in_epoch") is False]
    # ``counted`` false: nested in another phase, whose record the totals count; no
    # ``counted`` at all: written by a version whose totals counted epochs only
    for counted, where in ((True, "included in"), (None, "not in")):
        phases = [p for p in outside if p.get("counted") is counted]
        if phases:
            kwh = sum(
                float(p["energy_kwh"])
                for p in phases
                if isinstance(p.get("energy_kwh"), (int, float))
                and not isinstance(p["energy_kwh"], bool)
            )
            names = sorted({str(p.get("name")) for p in phases})
            notes.append(
                f"{len(phases)} phase(s) measured outside epochs ({', '.join(names)}; "
                f"{kwh:.4g} kWh) are {where} the run's totals"
            )
    return notes


def collect_logs(
    paths: PathLike | Iterable[PathLike], *, progress: ProgressCallback | None = None
) -> Collected:
    """Find and read the logs under ``paths`` (files and folders, searched recursively).

    Never raises for a bad path or a bad log: each goes to :attr:`Collected.skipped` with the
    reason. Two given paths that lead to the same file count it once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = Collected(paths_given=[Path(p) for p in paths])
    items: list[_Item] = []
    seen: set[tuple[str, ...]] = set()
    for given in result.paths_given:
        for item in _items_under(given, result.skipped):
            if isinstance(item, CarbontrackerLogPair):
                key = tuple(str(p.resolve(strict=False)) for p in (item.standard, item.output) if p)
            else:
                key = (str(item.resolve(strict=False)),)
            if key not in seen:
                seen.add(key)
                items.append(item)
    total = len(items)
    for done, item in enumerate(items, start=1):
        path = item.path if isinstance(item, CarbontrackerLogPair) else item
        try:
            if isinstance(item, CarbontrackerLogPair):
                log = read_carbontracker_log(item)
                if item.output is None:
                    result.notes.append((path, "carbontracker output log missing: epochs only"))
                elif item.standard is None:
                    result.notes.append((path, "carbontracker standard log missing"))
            else:
                log = read_run_log(item)
        except RunLogError as exc:
            result.skipped.append((path, str(exc)))
        except OSError as exc:
            result.skipped.append((path, f"cannot read: {exc.strerror or exc}"))
        except (UnicodeDecodeError, ValueError) as exc:
            result.skipped.append((path, f"not a log: {exc}"))
        else:
            result.logs.append(log)
            if not isinstance(item, CarbontrackerLogPair):
                result.notes.extend((path, note) for note in _damage_notes(log))
            intensity = log.header.get("intensity")
            if isinstance(intensity, dict) and intensity.get("intensity_g_per_kwh") is None:
                result.notes.append(
                    (
                        path,
                        "no carbon intensity in the log: its CO2eq is unknown and counts as 0 g "
                        "in the totals",
                    )
                )
        if progress is not None:
            progress(done, total, path)
    return result


__all__ = ["Collected", "ProgressCallback", "collect_logs"]
