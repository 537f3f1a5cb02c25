"""nnU-Net integration: ``carbon_progress.png``, drawn beside nnU-Net's ``progress.png``.

Part of :mod:`carbon_callbacks.integrations.nnunet`. Plotting only: every value comes from
nnU-Net's logger lists (or, for nnU-Net v1, the metrics the tracker returned per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from carbon_callbacks.core import metrics as keys

#: File written beside nnU-Net's ``progress.png``.
PNG_NAME = "carbon_progress.png"


class _Recorder(Protocol):
    """Where a failure to draw is recorded (the integration's per-trainer session)."""

    def record(self, kind: str, message: str) -> None: ...


def plot_carbon_progress(
    store: Mapping[str, list[Any]], path: Path, session: _Recorder | None = None
) -> None:
    """Draw the carbon curves from nnU-Net's logger lists into ``path`` (PNG). Never raises.

    Panels: energy per epoch (kWh); cumulative CO2eq (g) with the latest predicted total; mean
    power per measured component (W). Plotting only: every value comes from the logger.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        def series(key: str) -> list[float]:
            values = store.get(key, [])
            return [float(v) if isinstance(v, (int, float)) else math.nan for v in values]

        energy = series(keys.EPOCH_ENERGY_KWH)
        if not energy:
            return
        x = list(range(len(energy)))
        style = {"marker": "o", "markersize": 3} if len(x) <= 100 else {}
        fig = Figure(figsize=(8, 9), dpi=72)
        FigureCanvasAgg(fig)
        ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
        ax1.plot(x, energy, color="tab:blue", **style)
        ax1.set_ylabel("energy per epoch (kWh)")
        ax2.plot(x, series(keys.CO2_G), color="tab:green", label="measured, cumulative", **style)
        predicted = [v for v in series(keys.PRED_CO2_G) if math.isfinite(v)]
        if predicted:
            ax2.axhline(predicted[-1], color="tab:green", ls=":", label="predicted total")
        ax2.set_ylabel("CO2eq (g)")
        ax2.legend(loc="upper left")
        for key, label in (
            (keys.POWER_W, "total"),
            (keys.GPU_POWER_W, "GPU"),
            (keys.CPU_POWER_W, "CPU"),
            (keys.DRAM_POWER_W, "DRAM"),
        ):
            values = series(key)
            if any(math.isfinite(v) for v in values):
                ax3.plot(x[: len(values)], values, label=label, **style)
        ax3.set_ylabel("mean power (W)")
        ax3.set_xlabel("epoch")
        if ax3.lines:
            ax3.legend(loc="lower left")
        for ax in (ax1, ax2, ax3):
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.12, right=0.97, top=0.98, bottom=0.06, hspace=0.08)
        fig.savefig(str(path))
    except Exception as exc:  # noqa: BLE001 - a plot must never break training
        if session is not None:
            session.record("plot_failed", f"drawing {path.name} failed: {exc!r}")
