"""PNG figures from run logs: per-epoch energy and CO2eq with the prediction, cumulative CO2eq,
power by component, and the region what-if bars.

matplotlib is imported only when a figure is drawn (``pip install 'carbon-callbacks[plots]'``),
through its object-oriented API (``matplotlib.figure.Figure``), so no pyplot state or GUI
backend is touched. Every function takes a :class:`~carbon_callbacks.core.runlog.RunLog` (or a
path to one) and writes one PNG; :func:`plot_logs` writes the set for every run under some
folders.

The prediction in the per-epoch figure is the latest prediction of the whole run turned into a
per-epoch figure for the epochs still to come: ``(predicted total - measured total at the time
of the prediction) / (planned epochs - epochs measured then)``, with the same for its interval
bounds. The cumulative figure draws the measured running total and, from the point where the
latest prediction was made, a straight line to the predicted total at the planned last epoch,
with the interval as a band.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from carbon_callbacks.core.runlog import PathLike, RunLog, read_run_log

#: Figure size in inches (width, height) and resolution (dots per inch).
FIGSIZE_IN = (7.0, 4.2)
DPI = 110
_COMPONENT_COLOURS = {"gpu": "#1b9e77", "cpu": "#d95f02", "dram": "#7570b3", "total": "#333333"}


class PlotsUnavailable(ImportError):
    """matplotlib is not installed."""


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _figure(nrows: int = 1, height_in: float | None = None) -> tuple[Any, list[Any]]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is in the test environment
        raise PlotsUnavailable(
            "figures need matplotlib: pip install 'carbon-callbacks[plots]'"
        ) from exc
    height = height_in or FIGSIZE_IN[1] * (1 if nrows == 1 else 0.75 * nrows)
    fig = Figure(figsize=(FIGSIZE_IN[0], height), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, 1, squeeze=False)[:, 0].tolist()
    return fig, axes


def _load(log: RunLog | PathLike) -> RunLog:
    return log if isinstance(log, RunLog) else read_run_log(log)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _title(log: RunLog) -> str:
    return log.run_name or log.run_id or log.path.name


def _epoch_series(log: RunLog, key: str) -> tuple[list[int], list[float]]:
    """1-based epoch numbers and values of ``key`` (records without it left out)."""
    xs, ys = [], []
    for position, record in enumerate(log.epochs):
        value = _num(record.get(key))
        if value is None:
            continue
        epoch = record.get("epoch")
        xs.append((epoch if isinstance(epoch, int) else position) + 1)
        ys.append(value)
    return xs, ys


def _remaining_per_epoch(log: RunLog, key: str) -> tuple[int, int, float, float, float] | None:
    """(epochs measured at the prediction, planned epochs, per-epoch central, low, high) of the
    latest prediction for ``key`` (``energy_kwh`` or ``co2_g``), or None."""
    pred = log.latest_prediction
    if pred is None:
        return None
    total = _num(pred.get(key))
    planned = pred.get("epochs")
    after = pred.get("after_epochs")
    if total is None or not isinstance(planned, int) or not isinstance(after, int):
        return None
    if planned <= after:
        return None
    measured = 0.0
    offset_epochs = int(log.offsets["epochs"])
    measured += log.offsets[key]
    for record in log.epochs:
        epoch = record.get("epoch")
        if isinstance(epoch, int) and epoch < after:
            measured += _num(record.get(key)) or 0.0
    if offset_epochs > after:
        return None
    remaining = planned - after
    low = _num(pred.get(f"{key}_low"))
    high = _num(pred.get(f"{key}_high"))
    central = (total - measured) / remaining
    return (
        after,
        planned,
        central,
        (low - measured) / remaining if low is not None else central,
        (high - measured) / remaining if high is not None else central,
    )


def plot_energy_co2_per_epoch(log: RunLog | PathLike, path: PathLike) -> Path:
    """Energy (kWh) and CO2eq (g) per epoch as bars, with the predicted per-epoch value and its
    interval for the epochs still to come. Returns the PNG's path."""
    run = _load(log)
    fig, (ax_e, ax_c) = _figure(2)
    for ax, key, unit, colour in (
        (ax_e, "energy_kwh", "kWh", "#1f77b4"),
        (ax_c, "co2_g", "gCO2eq", "#6a3d9a"),
    ):
        xs, ys = _epoch_series(run, key)
        ax.bar(xs, ys, color=colour, alpha=0.8, label=f"measured {unit} per epoch")
        predicted = _remaining_per_epoch(run, key)
        if predicted is not None:
            after, planned, central, low, high = predicted
            span = [after + 0.5, planned + 0.5]
            ax.fill_between(
                span,
                [low, low],
                [high, high],
                color="#ff7f0e",
                alpha=0.25,
                label="prediction interval",
            )
            ax.plot(
                span,
                [central, central],
                color="#ff7f0e",
                linestyle="--",
                label=f"predicted per epoch (after {after} epochs)",
            )
            ax.set_xlim(0.5, planned + 0.5)
        ax.set_ylabel(unit)
        _integer_epochs(ax)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    ax_c.set_xlabel("epoch")
    ax_e.set_title(f"Energy and CO2eq per epoch: {_title(run)}")
    out = Path(path)
    fig.savefig(out)
    return out


def plot_cumulative_co2(log: RunLog | PathLike, path: PathLike) -> Path:
    """Cumulative CO2eq (g) by epoch, with the latest prediction of the total and its interval."""
    run = _load(log)
    fig, (ax,) = _figure(1)
    xs = [int(run.offsets["epochs"])]
    total = run.offsets["co2_g"]
    ys = [total]
    for position, record in enumerate(run.epochs):
        cumulative = record.get("cumulative")
        value = _num(cumulative.get("co2_g")) if isinstance(cumulative, dict) else None
        total = value if value is not None else total + (_num(record.get("co2_g")) or 0.0)
        epoch = record.get("epoch")
        xs.append((epoch if isinstance(epoch, int) else position) + 1)
        ys.append(total)
    ax.plot(xs, ys, marker="o", color="#6a3d9a", label="measured, cumulative")
    pred = run.latest_prediction
    if pred is not None:
        after = pred.get("after_epochs")
        planned = pred.get("epochs")
        central = _num(pred.get("co2_g"))
        if isinstance(after, int) and isinstance(planned, int) and central is not None:
            start_y = ys[min(len(ys) - 1, max(0, after - int(run.offsets["epochs"])))]
            low = _num(pred.get("co2_g_low"))
            high = _num(pred.get("co2_g_high"))
            ax.plot(
                [after, planned],
                [start_y, central],
                color="#ff7f0e",
                linestyle="--",
                label=f"predicted total {central:.4g} g (after {after} epochs)",
            )
            if low is not None and high is not None:
                ax.fill_between(
                    [after, planned],
                    [start_y, low],
                    [start_y, high],
                    color="#ff7f0e",
                    alpha=0.2,
                    label="prediction interval",
                )
                ax.errorbar(
                    [planned],
                    [central],
                    yerr=[[central - low], [high - central]],
                    color="#ff7f0e",
                    capsize=4,
                )
    ax.set_xlabel("epoch")
    ax.set_ylabel("gCO2eq (cumulative)")
    _integer_epochs(ax)
    ax.set_title(f"Cumulative CO2eq: {_title(run)}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    out = Path(path)
    fig.savefig(out)
    return out


def plot_power_by_component(log: RunLog | PathLike, path: PathLike) -> Path:
    """Mean power (W, before PUE) per component and in total, per epoch."""
    run = _load(log)
    fig, (ax,) = _figure(1)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for position, record in enumerate(run.epochs):
        power = record.get("power_w")
        if not isinstance(power, dict):
            continue
        epoch = record.get("epoch")
        x = (epoch if isinstance(epoch, int) else position) + 1
        for component, watts in power.items():
            value = _num(watts)
            if value is not None:
                xs, ys = series.setdefault(str(component), ([], []))
                xs.append(x)
                ys.append(value)
    order = [c for c in ("gpu", "cpu", "dram") if c in series] + sorted(
        c for c in series if c not in ("gpu", "cpu", "dram", "total")
    )
    for component in order + (["total"] if "total" in series else []):
        xs, ys = series[component]
        ax.plot(
            xs,
            ys,
            marker="o",
            label=component.upper() if component != "total" else "total",
            color=_COMPONENT_COLOURS.get(component),
            linestyle=":" if component == "total" else "-",
        )
    if not series:
        ax.text(0.5, 0.5, "no power recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean power (W, IT, before PUE)")
    _integer_epochs(ax)
    ax.set_title(f"Power by component: {_title(run)}")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="best", fontsize="small")
    out = Path(path)
    fig.savefig(out)
    return out


def plot_regions(result: Any, path: PathLike) -> Path:
    """Horizontal bars of a :class:`~carbon_callbacks.report.regions.RegionWhatIf`: CO2eq of the
    same energy per zone, with the CO2eq as logged for comparison."""
    rows = list(result.rows)
    fig, (ax,) = _figure(1, height_in=max(2.5, 0.45 * (len(rows) + 2)))
    labels = [f"{row.zone} ({row.intensity_g_per_kwh:.0f} g/kWh)" for row in rows]
    values = [row.co2_g for row in rows]
    colours = ["#2b8cbe" if row.zone != "WORLD" else "#969696" for row in rows]
    if result.as_logged_co2_g is not None:
        labels.append("as logged")
        values.append(result.as_logged_co2_g)
        colours.append("#e34a33")
    positions = list(range(len(values)))
    ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    for y, value in zip(positions, values, strict=True):
        ax.text(value, y, f" {value:.3g} g", va="center", fontsize="small")
    ax.set_xlabel("gCO2eq")
    ax.set_title(f"The same {result.energy_kwh:.4g} kWh in other grids")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.2)
    out = Path(path)
    fig.savefig(out)
    return out


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def plot_run(log: RunLog | PathLike, out_dir: PathLike, prefix: str | None = None) -> list[Path]:
    """The three per-run figures of one log, in ``out_dir``; returns their paths."""
    run = _load(log)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _safe_name(prefix or run.run_id or run.path.stem)
    return [
        plot_energy_co2_per_epoch(run, folder / f"{stem}_energy_co2_per_epoch.png"),
        plot_cumulative_co2(run, folder / f"{stem}_cumulative_co2.png"),
        plot_power_by_component(run, folder / f"{stem}_power_by_component.png"),
    ]


def plot_logs(
    paths: PathLike | Iterable[PathLike],
    out_dir: PathLike,
    *,
    zones: Iterable[str] | None = None,
    run_ids: Iterable[str] | None = None,
) -> tuple[list[Path], Any]:
    """Per-run figures for every counted run under ``paths`` and one region what-if figure of
    their total energy. Returns the PNG paths and the :class:`~carbon_callbacks.report.collect.
    Collected` logs (with what was skipped).

    Raises:
        ValueError: no run log could be read (nothing to draw).
    """
    from carbon_callbacks.core.runlog import aggregate_runs
    from carbon_callbacks.report.collect import collect_logs
    from carbon_callbacks.report.regions import DEFAULT_ZONES, what_if

    collected = collect_logs(paths)
    wanted = set(run_ids) if run_ids is not None else None
    logs = [
        log
        for log in collected.logs
        if wanted is None or log.run_id in wanted or (log.run_name in wanted)
    ]
    if not logs:
        raise ValueError("no run log to plot under the paths given")
    aggregate = aggregate_runs(logs)
    counted = {figure.path for figure in aggregate.runs}
    written: list[Path] = []
    used: set[str] = set()
    for log in logs:
        if log.path not in counted:
            continue
        stem = _safe_name(log.run_id or log.path.stem)
        while stem in used:
            stem += "_"
        used.add(stem)
        written += plot_run(log, out_dir, stem)
    label = f"{len(aggregate.runs)} run(s), as counted by the report"
    result = what_if(
        aggregate.energy_kwh,
        list(zones) if zones is not None else DEFAULT_ZONES,
        energy_from=label,
        as_logged_co2_g=aggregate.co2_g,
        as_logged_label="the intensities recorded in the logs",
    )
    written.append(plot_regions(result, Path(out_dir) / "regions_what_if.png"))
    return written, collected


__all__ = [
    "PlotsUnavailable",
    "plot_cumulative_co2",
    "plot_energy_co2_per_epoch",
    "plot_logs",
    "plot_power_by_component",
    "plot_regions",
    "plot_run",
]
