"""Carbon-driven model selection over run logs (Selvan, MIDL 2021: ``../shared/seeds/002``).

Each run log is one candidate model: its carbon footprint C (grams CO2eq of training, from the
log; see :func:`carbon_callbacks.core.runlog.run_figure` for which figure is used and why) and
the final value of a performance metric you name (a ``"metric"`` record, written by the
integrations for ``monitor_metric`` at the end of training, or by ``tracker.record_metric``).

* :func:`pareto_front`: the candidates no other candidate beats on both performance and CO2eq;
* :func:`rank`: candidates by the objective ``J = L + beta * C`` (seed 002, eq. 1), with
  ``L`` the performance as a loss: the metric itself when lower is better (a loss, an error),
  ``1 - metric`` when higher is better (Dice, accuracy: "Dice loss"; any constant shift such as
  ``-metric`` ranks the same), and C in grams CO2eq; ``beta`` is in units of L per gram (e.g.
  ``beta = 1e-4``: 100 g are worth 0.01 Dice);
* :func:`best_within_budget`: the best-performing candidate whose CO2eq is within a budget;
* :func:`plot`: performance against gCO2eq with the front and the budget line (seed 002, fig. 1).

Runs stopped by a budget keep the metric they reached when stopped, as in seed 002 ("obtained
after exhausting the budget").
"""

from __future__ import annotations

import difflib
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from carbon_callbacks.core.equivalents import km_by_car
from carbon_callbacks.core.runlog import (
    RunLog,
    RunLogError,
    find_run_logs,
    read_run_log,
    run_figure,
)

#: Name fragments of metrics where higher is better / lower is better (for the default).
HIGHER_IS_BETTER = (
    "dice", "acc", "f1", "iou", "jaccard", "auc", "precision", "recall", "map", "bleu",
    "rouge", "psnr", "ssim", "r2", "score", "sensitivity", "specificity",
)  # fmt: skip
LOWER_IS_BETTER = (
    "loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "fid",
    "hausdorff", "hd95", "wer", "cer", "distance",
)  # fmt: skip


class SelectionError(ValueError):
    """The run logs cannot answer the question asked (e.g. the metric was never logged)."""


@dataclass(frozen=True)
class Candidate:
    """One trained model, as its run log describes it.

    Attributes:
        name: the run's name (``run_name``), else its id; made unique with the id if needed.
        path: the run log.
        run_id: the run's id.
        metric: the performance metric's name.
        value: its final value, as logged.
        loss: L, the metric as a loss (lower is better; see the module docstring).
        co2_g: grams CO2eq of training (PUE included).
        energy_kwh: kWh of training (PUE included).
        duration_s: seconds of training (inside epochs).
        epochs: epochs the figures stand for.
        basis: ``"measured"``, ``"predicted"`` or ``"partial"`` (see ``run_figure``).
        status: the run's footer status (None when the run was killed).
        stop_reason: why a budget (or the user) stopped the run early, else None.
    """

    name: str
    path: Path
    run_id: str | None
    metric: str
    value: float
    loss: float
    co2_g: float
    energy_kwh: float
    duration_s: float
    epochs: int | None
    basis: str
    status: str | None
    stop_reason: str | None

    @property
    def stopped_by_budget(self) -> bool:
        """True when a budget or the user ended the run before its plan."""
        return self.stop_reason is not None

    def objective(self, beta: float) -> float:
        """``L + beta * C`` (C in grams CO2eq)."""
        return self.loss + beta * self.co2_g

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def higher_is_better(metric: str, override: bool | None = None) -> bool:
    """Whether a larger value of ``metric`` is better: ``override`` if given, else from its name.

    Raises:
        SelectionError: the name says neither (pass ``higher_is_better=True`` or ``False``).
    """
    if override is not None:
        return bool(override)
    name = metric.lower()
    if any(hint in name for hint in LOWER_IS_BETTER):
        return False
    if any(hint in name for hint in HIGHER_IS_BETTER):
        return True
    raise SelectionError(
        f"cannot tell from its name whether a higher {metric!r} is better: pass "
        "higher_is_better=True (Dice, accuracy...) or higher_is_better=False (a loss, an error)"
    )


def _last_metric(log: RunLog, name: str) -> float | None:
    for record in reversed(log.metrics):
        if record.get("name") == name:
            value = record.get("value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if math.isfinite(float(value)):
                    return float(value)
    return None


def _missing_message(metric: str, missing: list[RunLog], logs: list[RunLog]) -> str:
    seen: Counter[str] = Counter()
    for log in logs:
        seen.update({str(r.get("name")) for r in log.metrics if r.get("name") is not None})
    which = ", ".join(str(log.path) for log in missing[:3]) + (
        f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    )
    head = f"metric {metric!r} was never logged in {len(missing)} of {len(logs)} run(s) ({which})"
    if not seen:
        return (
            f"{head}; no run log holds any metric record. Set monitor_metric={metric!r} on the "
            "callback (it records that metric's final value), or call "
            f"tracker.record_metric({metric!r}, value) at the end of training"
        )
    listed = ", ".join(f"{name!r} ({n} run(s))" for name, n in sorted(seen.items()))
    close = difflib.get_close_matches(metric, list(seen), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{head}. Metrics logged: {listed}.{hint}"


def load_candidates(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str] | RunLog],
    metric: str,
    *,
    higher_is_better: bool | None = None,
    on_missing: str = "raise",
) -> list[Candidate]:
    """Read run logs (files, or folders searched for ``*.carbon.jsonl``) as candidates.

    Args:
        paths: run logs, folders, or :class:`RunLog` objects.
        metric: the performance metric's name, as logged (e.g. ``"val/dice"``).
        higher_is_better: the metric's direction; default: from its name.
        on_missing: ``"raise"`` (default) when a run lacks the metric, or ``"skip"`` it.

    Raises:
        SelectionError: no run log found, a log cannot be read, or (``on_missing="raise"``) a
            run lacks the metric; the message names the metrics that were logged.
    """
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    logs: list[RunLog] = []
    for item in paths:
        if isinstance(item, RunLog):
            logs.append(item)
            continue
        for path in find_run_logs([item]):
            try:
                logs.append(read_run_log(path))
            except (RunLogError, OSError) as exc:
                raise SelectionError(f"cannot read run log {path}: {exc}") from None
    if not logs:
        raise SelectionError("no run log (*.carbon.jsonl) found in the paths given")
    missing = [log for log in logs if _last_metric(log, metric) is None]
    if missing and (on_missing == "raise" or len(missing) == len(logs)):
        raise SelectionError(_missing_message(metric, missing, logs))
    higher = globals()["higher_is_better"](metric, higher_is_better)
    names = Counter(log.run_name or log.run_id or log.path.stem for log in logs)
    out = []
    for log in logs:
        value = _last_metric(log, metric)
        if value is None:
            continue
        fig = run_figure(log)
        name = log.run_name or log.run_id or log.path.stem
        if names[name] > 1:
            name = f"{name} ({log.run_id or log.path.stem})"
        out.append(
            Candidate(
                name=name,
                path=log.path,
                run_id=log.run_id,
                metric=metric,
                value=value,
                loss=1.0 - value if higher else value,
                co2_g=fig.co2_g,
                energy_kwh=fig.energy_kwh,
                duration_s=fig.duration_s,
                epochs=fig.epochs,
                basis=fig.basis,
                status=log.status,
                stop_reason=(log.footer or {}).get("stop_reason"),
            )
        )
    return out


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates that no other beats on both L and CO2eq (at least as good on both, better on
    one), by increasing CO2eq."""
    front = []
    for c in candidates:
        dominated = any(
            o.loss <= c.loss and o.co2_g <= c.co2_g and (o.loss < c.loss or o.co2_g < c.co2_g)
            for o in candidates
        )
        if not dominated:
            front.append(c)
    return sorted(front, key=lambda c: (c.co2_g, c.loss))


def rank(candidates: Sequence[Candidate], beta: float) -> list[tuple[Candidate, float]]:
    """Candidates with their objective ``L + beta * C``, best (lowest) first.

    Args:
        beta: weight of CO2eq, in units of L per gram CO2eq (>= 0; 0 ranks by performance).
    """
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise SelectionError(f"beta must be a finite number >= 0 (L per gCO2eq), got {beta!r}")
    scored = [(c, c.objective(beta)) for c in candidates]
    return sorted(scored, key=lambda item: (item[1], item[0].co2_g))


def best_within_budget(candidates: Sequence[Candidate], budget_g: float) -> Candidate | None:
    """The best-performing candidate (lowest L; ties: less CO2eq) with CO2eq <= ``budget_g``.

    Returns None when no candidate fits the budget.
    """
    if not isinstance(budget_g, (int, float)) or not math.isfinite(budget_g) or budget_g <= 0:
        raise SelectionError(
            f"budget_g must be a finite number > 0 (grams CO2eq), got {budget_g!r}"
        )
    fitting = [c for c in candidates if c.co2_g <= budget_g]
    return min(fitting, key=lambda c: (c.loss, c.co2_g)) if fitting else None


def format_table(
    candidates: Sequence[Candidate], beta: float = 0.0, budget_g: float | None = None
) -> str:
    """A plain-text table: candidates ranked by ``L + beta * C``, front and budget marked."""
    front = {id(c) for c in pareto_front(candidates)}
    best = best_within_budget(candidates, budget_g) if budget_g is not None else None
    rows = [
        f"{'rank':>4}  {'run':<24} {candidates[0].metric if candidates else 'metric':>10} "
        f"{'L':>8} {'gCO2eq':>10} {'kWh':>10} {'J=L+bC':>10}  notes"
    ]
    for i, (c, j) in enumerate(rank(candidates, beta), start=1):
        notes = []
        if id(c) in front:
            notes.append("Pareto front")
        if best is c:
            notes.append("best within budget")
        if budget_g is not None and c.co2_g > budget_g:
            notes.append("over budget")
        if c.stopped_by_budget:
            notes.append("stopped early")
        if c.basis != "measured":
            notes.append(c.basis)
        rows.append(
            f"{i:>4}  {c.name[:24]:<24} {c.value:>10.4g} {c.loss:>8.4g} {c.co2_g:>10.4g} "
            f"{c.energy_kwh:>10.4g} {j:>10.4g}  {', '.join(notes)}"
        )
    return "\n".join(rows)


def plot(
    candidates: Sequence[Candidate],
    *,
    budget_g: float | None = None,
    ax: Any = None,
    title: str | None = None,
    car_axis: bool = True,
) -> Any:
    """Performance against gCO2eq (seed 002, figure 1); returns the matplotlib Figure.

    Points are labelled with the run names; the Pareto front is a dashed line; runs stopped by a
    budget are hollow; with ``budget_g`` a dotted vertical line marks the budget and a star the
    best model within it. With ``car_axis`` the top axis gives the km driven by an average new
    EU car that emits as much (EEA figure; see :mod:`carbon_callbacks.core.equivalents`).
    Needs matplotlib (``pip install 'carbon-callbacks[plots]'``).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is in the plots extra
        raise ImportError("plot() needs matplotlib: pip install 'carbon-callbacks[plots]'") from exc
    if not candidates:
        raise SelectionError("nothing to plot: no candidates")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    else:
        fig = ax.figure
    for c in candidates:
        ax.scatter(
            c.co2_g,
            c.value,
            s=45,
            facecolors="none" if c.stopped_by_budget else "C0",
            edgecolors="C0",
            zorder=3,
        )
        ax.annotate(c.name, (c.co2_g, c.value), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)  # fmt: skip
    front = pareto_front(candidates)
    ax.plot([c.co2_g for c in front], [c.value for c in front], "--", color="C1", lw=1,
            label="Pareto front", zorder=2)  # fmt: skip
    if budget_g is not None:
        ax.axvline(budget_g, ls=":", color="C3", label=f"budget {budget_g:.3g} gCO2eq")
        best = best_within_budget(candidates, budget_g)
        if best is not None:
            ax.scatter(best.co2_g, best.value, marker="*", s=220, color="C3", zorder=4,
                       label=f"best within budget: {best.name}")  # fmt: skip
    ax.set_xlabel("training footprint (gCO2eq)")
    ax.set_ylabel(candidates[0].metric)
    if title:
        ax.set_title(title)
    if car_axis:
        per_g = km_by_car(1.0).value
        top = ax.secondary_xaxis("top", functions=(lambda g: g * per_g, lambda km: km / per_g))
        top.set_xlabel("km driven by car (average new EU car, EEA)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
