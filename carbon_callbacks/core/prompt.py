"""carbontracker's ``stop_and_confirm``: ask the user once, after the first prediction.

Up to three tries at ``continue training (y/n)?``; no answer (no terminal, EOF) means continue,
recorded as an event. The session asks on rank 0 only and writes the answer as a ``budget``
record (:meth:`Confirmation.record`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.predict import Prediction

QUESTION = "carbon_callbacks: continue training (y/n)? "


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """The user's answer to the prediction.

    Attributes:
        answer: ``"y"``, ``"n"``, or ``None`` (no answer could be read: training continues).
        reason: why training stops (``answer == "n"``) or goes on, for the run log.
    """

    answer: str | None
    reason: str

    @property
    def stop(self) -> bool:
        return self.answer == "n"

    def record(self, epoch: int, pred: Prediction) -> dict[str, Any]:
        """The run log's ``budget`` record of this answer after ``epoch``."""
        return {
            "type": "budget",
            "epoch": epoch,
            "action": "stop" if self.stop else "continue",
            "trigger": "user",
            "policy": "stop_and_confirm",
            "answer": self.answer,
            "predicted_co2_g": pred.co2_g,
            "predicted_energy_kwh": pred.energy_kwh,
            "reason": self.reason,
        }


def ask_to_continue(
    pred: Prediction, events: EventLog, read: Callable[[str], str] = input
) -> Confirmation:
    """Ask whether to continue after ``pred``; never raises (an unreadable answer continues)."""
    answer = None
    for _ in range(3):
        try:
            reply = read(QUESTION)
        except (EOFError, OSError, RuntimeError) as exc:
            events.record(
                "confirm_unanswered",
                f"stop_and_confirm could not read an answer ({exc!r}); training continues",
                "budget",
            )
            break
        reply = reply.strip().lower()
        if reply in ("y", "yes", "n", "no"):
            answer = reply[0]
            break
    if answer == "n":
        reason = (
            "stopped by the user after the prediction "
            f"({pred.co2_g:.4g} gCO2eq, {pred.energy_kwh:.4g} kWh predicted; stop_and_confirm)"
        )
        return Confirmation(answer, reason)
    return Confirmation(answer, "the user chose to continue")
