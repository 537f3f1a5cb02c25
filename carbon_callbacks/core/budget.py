"""Carbon, energy and time budgets: limits -> continue / warn / stop, with a reason.

A budget is one or more limits (grams CO2eq, kWh, seconds of training) and a policy:

``warn``
    never stops; says so once when the run is predicted to exceed a limit (central forecast)
    and once when it has spent it.
``stop-when-predicted-over``
    stops as soon as the prediction's *lower* bound exceeds a limit, i.e. when the run is
    unlikely (about 5 %, the interval being a 90 % one) to finish within it, saving the rest;
    also stops once a limit is spent. Warns first when only the central forecast is over.
``stop-when-spent``
    stops at the end of the epoch in which a limit is reached (it may overshoot by up to one
    epoch: decisions are taken at epoch ends). Warns when the central forecast is over.

Spent figures are the run's cumulative measured figures (resumed segments included):
``co2_g`` (g), ``energy_kwh`` (kWh incl. PUE) and ``duration_s`` (seconds inside epochs, the span
the prediction covers; gaps between epochs are not counted).

Limits can be given as numbers in the setting's unit or as text with a unit (``"2.5 kg"``,
``"500 Wh"``, ``"90 min"``); a unit of the wrong kind (an energy for ``budget_g``...) is refused
with the setting that takes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from carbon_callbacks.core.predict import Prediction

#: The policies, in words above.
POLICIES = ("warn", "stop-when-predicted-over", "stop-when-spent")

#: setting -> (quantity, unit shown, kind in words).
SETTINGS = {
    "budget_g": ("co2_g", "gCO2eq", "a carbon budget in grams CO2eq"),
    "budget_kwh": ("energy_kwh", "kWh", "an energy budget in kWh"),
    "budget_s": ("duration_s", "s", "a time budget in seconds"),
}

#: Units accepted in text limits, per quantity: name -> factor to the setting's unit.
_UNITS: dict[str, dict[str, float]] = {
    "co2_g": {"g": 1.0, "gco2": 1.0, "gco2eq": 1.0, "kg": 1e3, "kgco2": 1e3, "kgco2eq": 1e3,
              "t": 1e6, "tco2": 1e6, "tco2eq": 1e6},
    "energy_kwh": {"wh": 1e-3, "kwh": 1.0, "mwh": 1e3, "j": 1 / 3.6e6, "kj": 1 / 3.6e3,
                   "mj": 1 / 3.6},
    "duration_s": {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0},
}  # fmt: skip
_SETTING_OF = {quantity: setting for setting, (quantity, _, _) in SETTINGS.items()}
_WORDS = {"co2_g": "carbon", "energy_kwh": "energy", "duration_s": "time"}


class BudgetError(ValueError):
    """A budget setting is invalid (re-raised as ``ConfigError`` by the settings object)."""


def _unit_quantity(unit: str) -> str | None:
    for quantity, units in _UNITS.items():
        if unit in units:
            return quantity
    return None


def parse_limit(setting: str, value: Any) -> float:
    """A limit in the setting's unit (g, kWh or s) from a number or a text with a unit.

    Raises:
        BudgetError: not a number, <= 0, not finite, an unknown unit, or a unit of another kind
            (the message names the setting that takes it).
    """
    quantity, unit, what = SETTINGS[setting]
    if isinstance(value, bool):
        raise BudgetError(f"{setting} must be a number of {unit} or a text such as '100 {unit}'")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z0-9]*)\s*",
                             value)  # fmt: skip
        if match is None:
            raise BudgetError(
                f"{setting}={value!r} is not a number with a unit; {setting} is {what}, "
                f"e.g. {setting}=100 or {setting}='100 {unit}'"
            )
        number = float(match.group(1))
        given = match.group(2).lower().replace("co₂", "co2")
        if given:
            other = _unit_quantity(given)
            if other is None:
                accepted = ", ".join(sorted(_UNITS[quantity]))
                raise BudgetError(
                    f"{setting}={value!r}: unknown unit {match.group(2)!r}; {setting} is {what} "
                    f"and accepts {accepted}"
                )
            if other != quantity:
                right = _SETTING_OF[other]
                raise BudgetError(
                    f"{setting}={value!r} mixes up units: {setting} is {what}, but "
                    f"{match.group(2)!r} is a unit of {_WORDS[other]}; use {right}={value!r}"
                )
            number *= _UNITS[quantity][given]
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BudgetError(f"{setting} must be a number of {unit}, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise BudgetError(f"{setting} must be a finite number > 0 ({unit}), got {value!r}")
    return number


def normalise_policy(policy: Any) -> str:
    """The policy's canonical name (``stop_when_spent`` is accepted for ``stop-when-spent``)."""
    if not isinstance(policy, str) or policy.strip().lower().replace("_", "-") not in POLICIES:
        raise BudgetError(f"budget_policy must be one of {POLICIES}, got {policy!r}")
    return policy.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class Limit:
    """One limit.

    Attributes:
        quantity: ``"co2_g"``, ``"energy_kwh"`` or ``"duration_s"``.
        value: the limit in that unit (g, kWh, s).
        setting: the setting it came from (``budget_g``...).
        unit: the unit, for messages.
    """

    quantity: str
    value: float
    setting: str
    unit: str


@dataclass(frozen=True)
class Budget:
    """Limits and a policy (see the module docstring)."""

    limits: tuple[Limit, ...]
    policy: str

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], policy: str | None) -> Budget | None:
        """From ``{"budget_g": ..., "budget_kwh": ..., "budget_s": ...}``; None if no limit."""
        limits = tuple(
            Limit(SETTINGS[name][0], parse_limit(name, settings[name]), name, SETTINGS[name][1])
            for name in SETTINGS
            if settings.get(name) is not None
        )
        if not limits:
            return None
        return cls(limits, normalise_policy(policy or "warn"))

    def describe(self) -> str:
        """One line: ``"100 gCO2eq, 2 kWh (stop-when-spent)"``."""
        parts = ", ".join(f"{lim.value:g} {lim.unit}" for lim in self.limits)
        return f"{parts} ({self.policy})"


@dataclass(frozen=True)
class BudgetDecision:
    """What a budget check decided for one limit.

    Attributes:
        action: ``"warn"`` or ``"stop"``.
        trigger: ``"spent"`` (the measured figure reached the limit), ``"predicted"`` (the
            prediction's lower bound is over it) or ``"predicted-central"`` (only its central
            value is over).
        quantity / limit / unit: which limit (``co2_g`` in g, ``energy_kwh`` in kWh,
            ``duration_s`` in s).
        spent: the measured figure so far.
        predicted / predicted_low / predicted_high: the latest prediction of the whole run, if
            any.
        policy: the policy that decided.
        reason: one sentence for people.
    """

    action: str
    trigger: str
    quantity: str
    limit: float
    unit: str
    spent: float
    predicted: float | None
    predicted_low: float | None
    predicted_high: float | None
    policy: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


_PRED_FIELDS = {
    "co2_g": ("co2_g", "co2_g_low", "co2_g_high"),
    "energy_kwh": ("energy_kwh", "energy_kwh_low", "energy_kwh_high"),
    "duration_s": ("duration_s", "duration_s_low", "duration_s_high"),
}


def check_budget(
    budget: Budget, spent: Mapping[str, float], prediction: Prediction | None
) -> list[BudgetDecision]:
    """Decisions for every limit that calls for one (empty: continue).

    Args:
        budget: the limits and policy.
        spent: measured figures so far: ``co2_g`` (g), ``energy_kwh`` (kWh), ``duration_s`` (s).
        prediction: the latest prediction of the whole run, or None.
    """
    out: list[BudgetDecision] = []
    for lim in budget.limits:
        decided = _decide(budget.policy, lim, float(spent.get(lim.quantity, 0.0)), prediction)
        if decided is not None:
            out.append(decided)
    return out


def _decide(
    policy: str, lim: Limit, used: float, prediction: Prediction | None
) -> BudgetDecision | None:
    central = low = high = None
    if prediction is not None:
        central, low, high = (float(getattr(prediction, n)) for n in _PRED_FIELDS[lim.quantity])
    what = f"{_WORDS[lim.quantity]} budget of {lim.value:g} {lim.unit} ({lim.setting})"
    if used >= lim.value:
        action, trigger = ("warn" if policy == "warn" else "stop"), "spent"
        reason = f"{what} spent: {used:.4g} {lim.unit} measured so far"
    elif central is None or low is None:
        return None
    elif policy == "stop-when-predicted-over" and low > lim.value:
        action, trigger = "stop", "predicted"
        reason = (
            f"{what} will be exceeded: the whole run is predicted at {central:.4g} {lim.unit} "
            f"[{low:.4g} .. {high:.4g}], its lower bound over the budget; stopping after "
            f"{used:.4g} {lim.unit} spent"
        )
    elif central > lim.value:
        action, trigger = "warn", "predicted-central"
        reason = (
            f"{what} is predicted to be exceeded: the whole run is predicted at "
            f"{central:.4g} {lim.unit} [{low:.4g} .. {high:.4g}]"
        )
    else:
        return None
    return BudgetDecision(
        action=action,
        trigger=trigger,
        quantity=lim.quantity,
        limit=lim.value,
        unit=lim.unit,
        spent=used,
        predicted=central,
        predicted_low=low,
        predicted_high=high,
        policy=policy,
        reason=reason,
    )
