"""Phases the training loop has scheduled (:class:`PhasePlan`), and how the run's forecast
(:mod:`carbon_callbacks.core.predict`) counts their runs to come and costs those not run yet."""

from __future__ import annotations

import math
from collections.abc import Container, Iterable
from dataclasses import dataclass

#: A planned phase not run yet (validation every k epochs, before its first run) is costed as
#: its batches per training epoch's batches x this share of a training batch's cost: a forward
#: pass is about a third of forward + backward (training ~6N, inference ~2N FLOPs per token for
#: N parameters: Kaplan et al. 2020, "Scaling Laws for Neural Language Models", arXiv:2001.08361,
#: section 2.1).
PLANNED_FORWARD_SHARE = 1.0 / 3.0
#: The interval's range of that share: down to a fifth (memory-bound training steps), up to a
#: whole training batch (small models, where each batch's fixed Python and loading cost
#: dominates).
PLANNED_FORWARD_SHARE_LOW = 0.2
PLANNED_FORWARD_SHARE_HIGH = 1.0


@dataclass(frozen=True)
class PhasePlan:
    """A phase the training loop has scheduled, known before it runs (from the framework).

    Attributes:
        name: the phase's name, as in the phase records (e.g. ``"validation"``).
        every_epochs: it runs at the epochs ``e`` (0-based) with ``(e + 1) % every_epochs == 0``
            (Lightning's ``check_val_every_n_epoch``, Keras' ``validation_freq``).
        work_ratio: its batches per run / the training batches of an epoch, when known; used to
            cost it before its first run (see :data:`PLANNED_FORWARD_SHARE`).
        every_steps: instead of ``every_epochs``: it runs after every optimisation step ``s``
            (1-based, counted over the whole run) with ``s % every_steps == 0`` (Hugging Face's
            ``eval_strategy="steps"`` with ``eval_steps``). Its runs to come are counted from
            the steps done and left, so it needs the steps reported per epoch.
        at_last_step: a step plan also runs after the run's last step when that is not one of
            its multiples (the Trainer's final evaluation, transformers >= 5).
    """

    name: str
    every_epochs: int | None = None
    work_ratio: float | None = None
    every_steps: int | None = None
    at_last_step: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a phase plan needs the phase's name (e.g. 'validation')")
        if (self.every_epochs is None) == (self.every_steps is None):
            raise ValueError(
                "a phase plan needs one schedule: every_epochs (whole epochs) or every_steps "
                f"(optimisation steps), got every_epochs={self.every_epochs!r}, "
                f"every_steps={self.every_steps!r}"
            )
        for field_name in ("every_epochs", "every_steps"):
            value = getattr(self, field_name)
            if value is None:
                continue
            unit = "epochs" if field_name == "every_epochs" else "steps"
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{field_name} must be a whole number of {unit}, got {value!r}")
            if value < 1:
                raise ValueError(f"{field_name} must be at least 1, got {value}")
        if self.at_last_step and self.every_steps is None:
            raise ValueError("at_last_step is for a step plan: give every_steps too")
        if self.work_ratio is not None and not (
            math.isfinite(self.work_ratio) and self.work_ratio >= 0
        ):
            raise ValueError(
                f"work_ratio must be a finite number >= 0 (batches per run / training batches "
                f"per epoch), got {self.work_ratio!r}"
            )

    def runs_in(
        self, epochs: range, steps_done: float | None = None, steps_left: float | None = None
    ) -> float | None:
        """How many times it runs in these epochs, or (a step plan) in the steps after
        ``steps_done`` up to ``steps_done + steps_left``; None for a step plan without them."""
        if self.every_steps is not None:
            if steps_done is None or steps_left is None:
                return None
            k = self.every_steps
            # steps left can be fractional (epochs left x the median steps per epoch)
            end = round(steps_done + steps_left, 6)
            runs = math.floor(end / k + 1e-9) - math.floor(steps_done / k + 1e-9)
            if self.at_last_step and steps_left > 0 and not math.isclose(end / k, round(end / k)):
                runs += 1  # the run's last step, off the period
            return float(runs)
        k = self.every_epochs or 1
        return float(sum(1 for i in epochs if (i + 1) % k == 0))

    @property
    def how(self) -> str:
        """The schedule in words, as a prediction's method gives it."""
        if self.every_steps is not None:
            k = self.every_steps
            return ("every step" if k == 1 else f"every {k} steps") + " (planned)"
        k = self.every_epochs
        return ("every epoch" if k == 1 else f"every {k} epochs") + " (planned)"

    def schedule(
        self,
        remaining: range,
        per_run: float,
        steps_done: float | None = None,
        steps_left: float | None = None,
    ) -> tuple[float, str] | None:
        """Its phase records to come, and how; None when a step plan cannot count its runs.

        ``per_run``: records per epoch it runs in (two validations per epoch count twice);
        a step plan's run is one record.
        """
        runs = self.runs_in(remaining, steps_done, steps_left)
        if runs is None:
            return None
        return runs * (1.0 if self.every_steps is not None else per_run), self.how

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "every_epochs": self.every_epochs,
            "every_steps": self.every_steps,
            "at_last_step": self.at_last_step,
            "work_ratio": self.work_ratio,
        }


def _unseen_plans(
    plans: Iterable[PhasePlan],
    run_names: Container[str],
    remaining: range,
    steps_done: float | None,
    steps_left: float | None,
) -> list[tuple[PhasePlan, float | None]]:
    """The planned phases that have not run yet, with their runs to come (None: unknown)."""
    return [
        (p, p.runs_in(remaining, steps_done, steps_left)) for p in plans if p.name not in run_names
    ]


def _per_step_phase(
    plan: PhasePlan | None,
    runs: int,
    epochs_seen: int,
    steps_seen: float,
    steps_done: float | None,
    left_steps: float | None,
    steps_per_epoch: float | None,
) -> tuple[float, str, tuple[float, float]]:
    """A phase's runs to come in a step-based forecast: ``(count, how, (fewer, more))``.

    With a step plan (``plan``, ``every_steps`` set), its exact count and ``(0, 0)``.
    Otherwise the count is the phase's runs per step seen times the steps left. A phase that runs at
    epoch ends (validation) may or may not run in a last epoch that the step limit cuts short:
    Lightning ends the run with no validation there, the Hugging Face Trainer evaluates at every
    epoch's end, the short one included. The per-step rate counts the fraction ``f`` of that
    epoch's runs; ``fewer = f x`` and ``more = (1 - f) x`` the phase's runs per epoch are the
    counts it may be over or under by, and widen the interval (``(0, 0)`` when the steps left
    end on an epoch's end, or the steps per epoch are unknown).
    """
    if plan is not None:
        planned = plan.schedule(range(0), 1.0, steps_done, left_steps)
        if planned is not None:
            return (*planned, (0.0, 0.0))
    left = left_steps or 0.0
    count = runs / steps_seen * left
    how = f"{runs / steps_seen:.2g} per step"
    frac = (left / steps_per_epoch) % 1.0 if steps_per_epoch else 0.0
    if not 1e-9 < frac < 1 - 1e-9:
        return count, how, (0.0, 0.0)
    per_epoch = runs / epochs_seen
    how += f" (the last, partial epoch's {frac * per_epoch:.2g} may be none or whole)"
    return count, how, (frac * per_epoch, (1 - frac) * per_epoch)


def _add_unseen_plan(
    plan: PhasePlan,
    count: float | None,
    base_per_epoch: dict[str, float],
    totals: dict[str, list[float]],
) -> str:
    """Cost a planned phase that has not run yet into ``totals``; return its note.

    Each run to come is ``work_ratio`` x :data:`PLANNED_FORWARD_SHARE` of a base epoch, within
    [:data:`PLANNED_FORWARD_SHARE_LOW`, :data:`PLANNED_FORWARD_SHARE_HIGH`] x ``work_ratio``
    (the range's half-widths add in quadrature to the other parts'). Without a ``work_ratio``
    nothing is added: the note says that the forecast leaves it out.
    """
    if count is None:
        return (
            f"{plan.name}: {plan.how}, not in the forecast until its first run (the steps per "
            "epoch are not reported, so its runs to come are unknown)"
        )
    if count <= 0:
        return f"{plan.name}: {plan.how}, none to come"
    if plan.work_ratio is None:
        return (
            f"{plan.name}: {plan.how}, {count:g} to come, not in the forecast until its "
            "first run (its size is unknown)"
        )
    for key in ("s", "kwh"):
        per_run = plan.work_ratio * base_per_epoch[key]
        totals[key][0] += count * per_run * PLANNED_FORWARD_SHARE
        totals[key][1] += (
            count * per_run * (PLANNED_FORWARD_SHARE - PLANNED_FORWARD_SHARE_LOW)
        ) ** 2
        totals[key][2] += (
            count * per_run * (PLANNED_FORWARD_SHARE_HIGH - PLANNED_FORWARD_SHARE)
        ) ** 2
    return (
        f"{plan.name}: {plan.how}, {count:g} to come x {plan.work_ratio:.3g} of an epoch's "
        f"batches x {PLANNED_FORWARD_SHARE:.2g} of a training batch "
        f"[{PLANNED_FORWARD_SHARE_LOW:g}-{PLANNED_FORWARD_SHARE_HIGH:g}] (not run yet)"
    )
