"""The run's totals as one value: what the console, the run log, the metrics and a checkpoint read.

A :class:`Totals` is immutable and adds up: a resumed run's earlier segments (from a checkpoint)
plus this process's running sums is one ``Totals``, and every place that shows a total (the
epoch record's ``cumulative``, the footer, ``carbon/energy_kwh`` and ``carbon/co2_g``, the final
console report, ``state_dict()``, ``CarbonTracker.totals()``, budgets) reads that one value, so
they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from carbon_callbacks.core import metrics as keys

#: Component under which a resumed run's earlier energy is kept when its checkpoint did not
#: say per component (checkpoints written before the per-component totals existed).
EARLIER_SEGMENTS = "earlier_segments"


class Totals(NamedTuple):
    """Cumulative figures of a run, or of one part of it.

    Attributes:
        energy_kwh: energy in kWh, PUE included.
        co2_g: grams CO2eq.
        duration_s: seconds measured in epochs and counted work outside epochs.
        epochs: epochs completed (measured or only counted past ``monitor_epochs``).
        steps: optimisation steps reported; ``None`` when none was ever reported.
        energy_kwh_by_component: kWh (PUE included) per component (``gpu``, ``cpu``, ``dram``;
            :data:`EARLIER_SEGMENTS` for resumed energy whose components are not known); sums
            to ``energy_kwh``. Read-only, like the value itself.
    """

    energy_kwh: float = 0.0
    co2_g: float = 0.0
    duration_s: float = 0.0
    epochs: int = 0
    steps: int | None = None
    energy_kwh_by_component: Mapping[str, float] = {}  # noqa: RUF012 - never mutated

    def __add__(self, other: Totals) -> Totals:  # type: ignore[override]
        """The sum of two totals (not tuple concatenation)."""
        if not isinstance(other, Totals):
            return NotImplemented
        by_component = self.energy_kwh_by_component
        if other.energy_kwh_by_component:  # a new mapping: neither operand changes
            by_component = dict(by_component)
            for component, kwh in other.energy_kwh_by_component.items():
                by_component[component] = by_component.get(component, 0.0) + kwh
        steps = self.steps
        if other.steps is not None:
            steps = (steps or 0) + other.steps
        return tuple.__new__(  # the fields in order: ~1 us per epoch on the training thread
            Totals,
            (
                self.energy_kwh + other.energy_kwh,
                self.co2_g + other.co2_g,
                self.duration_s + other.duration_s,
                self.epochs + other.epochs,
                steps,
                by_component,
            ),
        )

    def cumulative(self) -> dict[str, float]:
        """``energy_kwh``, ``co2_g`` and ``duration_s``: an epoch record's ``cumulative``, and
        what budgets compare with their limits."""
        return {"energy_kwh": self.energy_kwh, "co2_g": self.co2_g, "duration_s": self.duration_s}

    def metrics(self) -> dict[str, float]:
        """``carbon/energy_kwh``, ``carbon/co2_g`` and ``carbon/duration_s``."""
        return {
            keys.ENERGY_KWH: self.energy_kwh,
            keys.CO2_G: self.co2_g,
            keys.DURATION_S: self.duration_s,
        }

    def to_offsets(self) -> dict[str, float]:
        """The run log header's ``offsets`` (what a resumed run carried over)."""
        return {**self.cumulative(), "epochs": self.epochs}

    def to_state(self) -> dict[str, Any]:
        """The checkpoint's totals (keys of ``CarbonTracker.state_dict()``, JSON-ready)."""
        return {
            **self.cumulative(),
            "epochs": self.epochs,
            "steps": self.steps or 0,
            "energy_kwh_by_component": dict(self.energy_kwh_by_component),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Totals:
        """The totals a checkpoint carried (:meth:`to_state`, or an older checkpoint without
        ``energy_kwh_by_component``: its energy is then under :data:`EARLIER_SEGMENTS`).

        Raises:
            KeyError, TypeError, ValueError: the state lacks a total or holds a non-number.
        """
        energy_kwh = float(state["energy_kwh"])
        raw = state.get("energy_kwh_by_component")
        if isinstance(raw, Mapping):
            by_component = {str(c): float(kwh) for c, kwh in raw.items()}
        else:
            by_component = {EARLIER_SEGMENTS: energy_kwh} if energy_kwh else {}
        return cls(
            energy_kwh=energy_kwh,
            co2_g=float(state["co2_g"]),
            duration_s=float(state["duration_s"]),
            epochs=int(state["epochs"]),
            steps=int(state.get("steps", 0) or 0),
            energy_kwh_by_component=by_component,
        )
