"""The framework-neutral tracking session: start, epochs, phases, prediction, stop.

:class:`CarbonTracker` is what every integration drives, and what users of carbontracker switch
to by changing an import: ``epochs``, ``epochs_before_pred``, ``monitor_epochs``, ``log_dir``,
``epoch_start()``, ``epoch_end()`` and ``stop()`` mean what they mean there. On top:

* ``epoch_end()`` returns the epoch's metrics (keys in :mod:`carbon_callbacks.core.metrics`);
* ``with tracker.phase("validation"):`` measures a named part of an epoch, and
  ``with tracker.track("inference"):`` any block of work outside training;
* every figure is written to a crash-safe run log with its provenance;
* nothing here ever raises into training after construction: failures are recorded and warned
  once (see :mod:`carbon_callbacks.core.events`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from carbon_callbacks import __version__
from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.budget import Budget, BudgetDecision, check_budget
from carbon_callbacks.core.config import CarbonConfig, ConfigError
from carbon_callbacks.core.console import fmt, format_final, format_prediction
from carbon_callbacks.core.distributed import (
    RankGroup,
    RankInfo,
    _dist,
    local_rank_info,
    may_be_distributed,
    world_size,
)
from carbon_callbacks.core.events import CarbonCallbacksWarning, Event, EventLog
from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider
from carbon_callbacks.core.intensity.ranks import DeferredLiveProvider, can_forecast, held_over
from carbon_callbacks.core.intensity.resolve import resolve_intensity
from carbon_callbacks.core.intensity.static import StaticIntensityProvider
from carbon_callbacks.core.meter import Measurement, Meter, Snapshot
from carbon_callbacks.core.predict import EpochSample, PhasePlan, PhaseSample, Prediction
from carbon_callbacks.core.predict_incremental import RunPredictor
from carbon_callbacks.core.runlog import (
    SCHEMA_VERSION,
    RunLogWriter,
    new_run_id,
    new_run_log_path,
    utc_iso,
)
from carbon_callbacks.core.sensors.base import Sensor
from carbon_callbacks.core.signals import SigtermChain
from carbon_callbacks.core.units import J_PER_KWH

#: Epochs kept for prediction (older ones are summed, not kept): memory stays bounded.
_HISTORY_LEN = 4096
_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class _RankZeroShare:
    """What rank 0 adds to the per-epoch exchange, so that every rank records the same epoch.

    Attributes:
        start_unix_s / end_unix_s: rank 0's epoch window (UTC seconds).
        duration_s: rank 0's epoch duration (monotonic seconds).
        intensity: the intensity rank 0 applied to that window, with its provenance (live,
            held, annual or labelled fallback, as rank 0's source answered).
        forecasts: whether rank 0's source can forecast; then, when a prediction is made, rank 0
            also sends the forecast it applied (one more small exchange), else nobody asks.
    """

    start_unix_s: float
    end_unix_s: float
    duration_s: float
    intensity: IntensityEstimate
    forecasts: bool


class CarbonTracker:
    """Measure, predict and log the energy and CO2eq of a run, per epoch.

    Args:
        epochs: epochs the run will train (for the prediction); ``None`` if unknown.
        config: a ready :class:`CarbonConfig`; or pass its fields as keyword arguments.
        sensors: sensors to use instead of discovering them (tests, custom hardware).
        intensity: an intensity provider instead of resolving one from the settings.
        **settings: any :class:`CarbonConfig` field (``pue``, ``zone``, ``log_dir``...).

    Raises:
        ConfigError: at construction, for any invalid or contradictory setting.
    """

    def __init__(
        self,
        epochs: int | None = None,
        *,
        config: CarbonConfig | None = None,
        sensors: list[Sensor] | None = None,
        intensity: IntensityProvider | None = None,
        **settings: Any,
    ):
        if config is None:
            config = CarbonConfig.from_kwargs(epochs=epochs, **settings)
        else:
            if settings:
                raise ConfigError(
                    f"pass either config=CarbonConfig(...) or settings {sorted(settings)}, not both"
                )
            if epochs is not None and epochs != config.epochs:
                config = dataclasses.replace(config, epochs=epochs)  # validated again
        self.config: CarbonConfig = config
        self._pending_events: list[Event] = []
        self._events_lock = threading.Lock()
        self._header_written = False
        self._writer: RunLogWriter | None = None
        self.events = EventLog(listener=self._on_event)
        # resolving is cheap and validates the zone now; a live provider fetches on its own
        # thread (never on this one) and is closed by stop(). When this process may be one of
        # several ranks, a live provider is only built here and started at start() on rank 0
        # (the other ranks use rank 0's values: see _settle_intensity and _combine)
        defer_live = intensity is None and config.distributed is not False and may_be_distributed()
        self._intensity: IntensityProvider = intensity or resolve_intensity(
            config, self.events, defer_live=defer_live
        )
        self._owns_intensity = intensity is None  # a provider made here is closed at stop()
        #: True on a rank other than 0 of a combined run: its epochs use rank 0's intensity.
        self._follows_rank_zero = False
        #: Rank 0's last intensity received (or, on rank 0, sent) in the per-epoch exchange.
        self._rank_zero_intensity: IntensityEstimate | None = None
        #: Whether rank 0's source can forecast (from the last exchange; see _RankZeroShare).
        self._rank_zero_forecasts = False
        #: The intensity agreed for the epoch being combined (taken by _epoch_end).
        self._epoch_intensity: IntensityEstimate | None = None
        self._intensity_failing = False
        self._intensity_fallback: IntensityProvider | None = None
        self._given_sensors = sensors
        self.run_id = new_run_id()
        self._lock = threading.RLock()
        self._meter: Meter | None = None
        self.log_path: str | None = None
        self._started = False
        self._stopped = False
        self._start_snap: Snapshot | None = None
        self._epoch_snap: Snapshot | None = None
        self._phases: list[tuple[str, Snapshot]] = []
        # totals of this process's segment (a resumed run adds the offsets below)
        self.epochs_completed = 0
        self.epochs_monitored = 0
        self._energy_kwh = 0.0
        self._co2_g = 0.0
        self._duration_s = 0.0
        self._epoch_j_by_component: dict[str, float] = {}
        self._offset = {"energy_kwh": 0.0, "co2_g": 0.0, "duration_s": 0.0, "epochs": 0}
        self._prior_run_ids: list[str] = []
        self._history: deque[EpochSample] = deque(maxlen=_HISTORY_LEN)
        self._epoch_phases: list[PhaseSample] = []
        self._steps_done: int | None = None
        self._offset_steps = 0
        self.prediction: Prediction | None = None
        self.ranks = RankInfo(host_leader=True)
        self._group: RankGroup | None = None
        self._gpu_override: int | str | None = None
        self._verbose = config.verbose
        #: True once a budget (or the user, with ``stop_and_confirm``) decided that training
        #: should stop; integrations translate it into their framework's own stop flag.
        #: ``stop_reason`` says why. Checked after every epoch.
        self.should_stop = False
        self.stop_reason: str | None = None
        self.budget: Budget | None = Budget.from_settings(
            {n: getattr(config, n) for n in ("budget_g", "budget_kwh", "budget_s")},
            config.budget_policy,
        )
        self._budget_said: set[tuple[str, str, str]] = set()
        self._confirm_asked = False
        self._no_prediction_noted = False
        # carried from epoch to epoch: predictions at a cost that does not grow with the run
        self._predictor = RunPredictor()
        # phases the framework scheduled, by name: (plan, where it came from)
        self._plans: dict[str, tuple[PhasePlan, str]] = {}
        self.last_metrics: dict[str, float] = {}
        self.last_measurement: Measurement | None = None
        #: The signal that ended or interrupted the run ("SIGTERM"), recorded in the footer.
        self._signal: str | None = None
        self._sigterm = SigtermChain(self._on_sigterm)

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> CarbonTracker:
        """Discover sensors, start the meter and write the run log's header. Idempotent.

        On the main thread this also chains a SIGTERM handler that writes the footer before
        the process goes (see :mod:`carbon_callbacks.core.signals`).
        """
        with self._sigterm.busy(), self._lock:
            if self._started:
                return self
            self._started = True
            try:
                self._start()
            except Exception as exc:  # noqa: BLE001 - never break training
                self.events.record(
                    "tracker_start_failed",
                    f"the tracker could not start ({exc!r}); training continues unmeasured",
                    "tracker",
                )
            why = self._sigterm.install()
            if why is not None:
                self.events.record("sigterm_not_handled", why, "tracker", warn=False)
        return self

    def _start(self) -> None:
        from carbon_callbacks.core.sensors.discovery import discover_sensors

        self._join_ranks()
        self._settle_intensity()
        config = self._rank_config()
        sensors = self._given_sensors
        if not self.ranks.host_leader and not config.measures_gpu:
            sensors = []  # CPU and DRAM are the host leader's; this rank has nothing else
            self.events.record(
                "rank_measures_nothing",
                f"rank {self.ranks.rank} measures nothing: components={config.components!r} "
                "and CPU/DRAM are measured once per host, by its lowest rank",
                "distributed",
                warn=False,
            )
        elif sensors is None:
            sensors = discover_sensors(config, self.events)
        elif not self.ranks.host_leader:
            sensors = [s for s in sensors if s.info.component == "gpu"]
        if not sensors and (self.ranks.host_leader or config.measures_gpu):
            self.events.record(
                "no_sensor",
                "no energy sensor is available for the chosen components "
                f"({self.config.components!r}); energy will be reported as unmeasured, not zero",
                "tracker",
            )
        self._meter = Meter(
            sensors,
            self.events,
            interval_s=self.config.interval_s,
            counter_interval_s=self.config.counter_interval_s,
        )
        started_unix = time.time()
        if self.config.log_dir is not None and self.ranks.rank == 0:
            path = new_run_log_path(
                self.config.log_dir, self.config.log_file_prefix, self.run_id, started_unix
            )
            self.log_path = str(path)
            self._writer = RunLogWriter(path, self.events)
        self._start_snap = self._meter.start()
        sensor_infos = [i.to_dict() for i in self._meter.sensor_infos]
        if self._group is not None:
            try:
                every_rank = self._group.gather(sensor_infos)
                sensor_infos = [
                    {**i, "name": f"rank{r}/{i['name']}"}
                    for r, infos in enumerate(every_rank)
                    for i in infos
                ]
            except Exception as exc:  # noqa: BLE001
                self._ranks_apart(
                    f"the ranks could not exchange their sensors ({exc!r}); each rank reports "
                    "its own figures"
                )
        intensity = self._intensity_over(started_unix, started_unix)
        ranks: dict[str, Any] = {
            "world_size": self.ranks.world_size,
            "hosts": self.ranks.hosts,
            "combined": self._group is not None,
        }
        if self._group is not None:
            ranks["intensity_from_rank"] = 0  # every rank applies rank 0's values
        self._write(
            {
                "type": "header",
                "schema": SCHEMA_VERSION,
                "package_version": __version__,
                "run_id": self.run_id,
                "run_name": self.config.run_name,
                "started_at_unix_s": started_unix,
                "started_at": utc_iso(started_unix),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "config": self.config.to_dict(),
                "sensors": sensor_infos,
                "intensity": intensity.to_dict(),
                "pue": self.config.pue,
                "epochs": self.config.epochs,
                "total_steps": self.config.total_steps,
                "resumed_from": list(self._prior_run_ids),
                "offsets": dict(self._offset),
                "ranks": ranks,
            }
        )
        with self._events_lock:  # events from other threads wait for the swap
            self._header_written = True
            pending, self._pending_events = self._pending_events, []
        for event in pending:
            self._write({"type": "event", **event.to_dict()})
        for plan, source in self._plans.values():  # planned before the start
            self._write(_plan_record(plan, source))

    def stop(self, status: str = "completed") -> dict[str, float]:
        """Stop measuring, write the footer and print the final report. Idempotent.

        Args:
            status: ``"completed"``, ``"interrupted"`` (Ctrl-C, SIGTERM, budget) or ``"failed"``.

        Returns:
            The run's totals (``carbon/energy_kwh``, ``carbon/co2_g``, ``carbon/duration_s``).
        """
        with self._sigterm.busy(), self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                self._close_intensity()
                return self.totals()
            self._stopped = True
            if self.should_stop and status == "completed":
                status = "interrupted"  # ended early by a budget or the user, not by its plan
            try:
                self._stop(status)
            except Exception as exc:  # noqa: BLE001
                self.events.record(
                    "tracker_stop_failed", f"stopping the tracker failed: {exc!r}", "tracker"
                )
            finally:
                if self._meter is not None and self._meter.running:
                    with contextlib.suppress(Exception):
                        self._meter.stop()
                if self._writer is not None:
                    self._writer.close()
                self._sigterm.uninstall()
                self._close_intensity()
                if self._group is not None:
                    self._group.close()
                    self._group = None
        return self.totals()

    def _stop(self, status: str) -> None:
        if self._epoch_snap is not None and self._meter is not None:
            # an epoch was open (interrupted, failed): its energy counts, as a partial epoch
            start, self._epoch_snap = self._epoch_snap, None
            m = self._meter.measure(start, self._meter.mark())
            epoch = self._offset["epochs"] + self.epochs_completed
            record, energy_kwh, co2_g, _ = self._measurement_record(m, "phase", epoch)
            record.update(name="partial_epoch", in_epoch=False, counted=True)
            self._add_to_totals(m, energy_kwh, co2_g)
            self._write(record)
        meter = self._meter
        if meter is None or self._start_snap is None:
            return
        end = meter.stop() or meter.mark()
        whole = meter.measure(self._start_snap, end)
        by_component = {
            comp: j / J_PER_KWH * self.config.pue for comp, j in self._epoch_j_by_component.items()
        }
        self._write(self._footer(status, whole))
        if self._verbose >= 1:
            self._print(
                format_final(
                    status=status,
                    duration_s=self._offset["duration_s"] + self._duration_s,
                    energy_kwh=self._offset["energy_kwh"] + self._energy_kwh,
                    co2_g=self._offset["co2_g"] + self._co2_g,
                    energy_kwh_by_component=by_component,
                    epochs_completed=self._offset["epochs"] + self.epochs_completed,
                    sensors=meter.sensor_infos,
                    intensity=self._intensity_over(whole.start_unix_s, whole.end_unix_s),
                    pue=self.config.pue,
                    digits=self.config.decimal_precision,
                    log_path=self._log_path_for_report(),
                    events=len(self.events.events),
                )
            )

    def _footer(self, status: str, whole: Measurement) -> dict[str, Any]:
        """The footer record for the session measured by ``whole``."""
        record = {
            "type": "footer",
            "status": status,
            "ended_at_unix_s": whole.end_unix_s,
            "ended_at": utc_iso(whole.end_unix_s),
            "duration_s": whole.duration_s,
            "energy_j": whole.energy_j,
            "methods": whole.methods,
            "incomplete": list(whole.incomplete),
            "session_energy_kwh": whole.total_energy_j / J_PER_KWH * self.config.pue,
            "energy_kwh": self._offset["energy_kwh"] + self._energy_kwh,
            "co2_g": self._offset["co2_g"] + self._co2_g,
            "epochs_duration_s": self._offset["duration_s"] + self._duration_s,
            "totals_scope": "epochs, partial epochs and tracked work outside epochs",
            "epochs_completed": self._offset["epochs"] + self.epochs_completed,
            "epochs_monitored": self.epochs_monitored,
            "epochs_planned": self.config.epochs,
            "stop_reason": self.stop_reason,
            "events_dropped": self.events.dropped,
        }
        if self._signal is not None:
            record["signal"] = self._signal
        return record

    def _on_sigterm(self, terminating: bool) -> None:
        """SIGTERM arrived (called on the main thread, outside any tracker call).

        ``terminating``: the process ends right after this (SIGTERM's default action), so stop
        completely; else a previous handler decides, so write a footer and keep measuring (a
        later ``stop()`` writes a newer one). See :mod:`carbon_callbacks.core.signals`.
        """
        if self._stopped or not self._started:
            return
        self._signal = "SIGTERM"
        if terminating:
            self.stop("interrupted")
            return
        try:
            with self._lock:
                if self._meter is not None and self._start_snap is not None:
                    whole = self._meter.measure(self._start_snap, self._meter.mark())
                    self._write(self._footer("interrupted", whole))
        except Exception as exc:  # noqa: BLE001
            self.events.record("hook_failed", f"SIGTERM footer failed: {exc!r}", "tracker")

    def __enter__(self) -> CarbonTracker:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            status = "completed"
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            status = "interrupted"
        else:
            status = "failed"
        self.stop(status)

    # -- epochs ----------------------------------------------------------------------------------
    @property
    def monitoring(self) -> bool:
        """False once ``monitor_epochs`` epochs were measured (later epochs are only counted)."""
        limit = self.config.monitor_epochs
        return limit == -1 or self.epochs_monitored < limit

    def epoch_start(self) -> None:
        """Mark the start of an epoch (starts the tracker on first use)."""
        with self._sigterm.busy():
            try:
                self.start()
                if not self.monitoring or self._meter is None:
                    return
                self._epoch_snap = self._meter.mark()
                self._epoch_phases = []
            except Exception as exc:  # noqa: BLE001
                self.events.record("hook_failed", f"epoch_start failed: {exc!r}", "tracker")

    def epoch_end(self, steps: int | None = None) -> dict[str, float]:
        """Mark the end of the epoch; record it; predict when due; return its metrics.

        Args:
            steps: optimisation steps done in this epoch (for step-based prediction).

        Returns:
            The metrics (see :mod:`carbon_callbacks.core.metrics`); empty when not measured.
        """
        with self._sigterm.busy():
            try:
                return self._epoch_end(steps)
            except Exception as exc:  # noqa: BLE001
                self.events.record("hook_failed", f"epoch_end failed: {exc!r}", "tracker")
                return {}

    def _epoch_end(self, steps: int | None) -> dict[str, float]:
        with self._lock:
            start = self._epoch_snap
            self._epoch_snap = None
            index = self._offset["epochs"] + self.epochs_completed
            self.epochs_completed += 1
            if steps is not None:
                self._steps_done = (self._steps_done or 0) + steps
            if start is None or self._meter is None:
                return {}
            end = self._meter.mark()
            m = self._combine(self._meter.measure(start, end))
            self.last_measurement = m
            record, energy_kwh, co2_g, intensity = self._measurement_record(
                m, "epoch", index, self._take_epoch_intensity()
            )
            record["steps"] = steps
            self.epochs_monitored += 1
            if not m.energy_j:
                return self._unmeasured_epoch(record, m, intensity)
            self._add_to_totals(m, energy_kwh, co2_g)
            record["cumulative"] = {
                "energy_kwh": self._offset["energy_kwh"] + self._energy_kwh,
                "co2_g": self._offset["co2_g"] + self._co2_g,
                "duration_s": self._offset["duration_s"] + self._duration_s,
            }
            self._write(record)
            phases = tuple(self._epoch_phases)
            self._epoch_phases = []
            self._history.append(EpochSample(m.duration_s, energy_kwh, co2_g, steps, phases))
            self._maybe_predict(intensity)
            self._check_budget(index)
            metrics = self._metrics(m, energy_kwh, co2_g, intensity)
            self.last_metrics = metrics
            if self._verbose >= 2:
                self._print(
                    f"carbon_callbacks: epoch {index}: {m.duration_s:.2f} s, "
                    f"{fmt(energy_kwh, self.config.decimal_precision)} kWh, "
                    f"{fmt(co2_g, self.config.decimal_precision)} gCO2eq"
                )
            return metrics

    def _add_to_totals(self, m: Measurement, energy_kwh: float, co2_g: float) -> None:
        self._energy_kwh += energy_kwh
        self._co2_g += co2_g
        self._duration_s += m.duration_s
        for comp, joules in m.energy_j_by_component().items():
            self._epoch_j_by_component[comp] = self._epoch_j_by_component.get(comp, 0.0) + joules

    def _unmeasured_epoch(
        self, record: dict[str, Any], m: Measurement, intensity: IntensityEstimate
    ) -> dict[str, float]:
        """An epoch no sensor covered (none available, or all lost): recorded as unmeasured,
        with null energy and CO2; its metrics carry no energy, CO2 or power key (a gap in the
        user's charts, never a silent 0), and it is left out of totals and prediction."""
        record.update(energy_kwh=None, co2_g=None, power_w={}, unmeasured=True)
        record["cumulative"] = {
            "energy_kwh": self._offset["energy_kwh"] + self._energy_kwh,
            "co2_g": self._offset["co2_g"] + self._co2_g,
            "duration_s": self._offset["duration_s"] + self._duration_s,
        }
        self._write(record)
        metrics = {
            keys.EPOCH_DURATION_S: m.duration_s,
            keys.INTENSITY_G_PER_KWH: intensity.intensity_g_per_kwh,
        }
        self.last_metrics = metrics
        return metrics

    def _measurement_record(
        self,
        m: Measurement,
        kind: str,
        epoch: int | None,
        intensity: IntensityEstimate | None = None,
    ) -> tuple[dict[str, Any], float, float, IntensityEstimate]:
        """The record of ``m`` with its energy (kWh), CO2eq (g) and the intensity applied.

        ``intensity``: the value agreed between ranks for this window; ``None``: ask the
        provider (see :meth:`_intensity_over`).
        """
        if intensity is None:
            intensity = self._intensity_over(m.start_unix_s, m.end_unix_s)
        energy_kwh = m.total_energy_j / J_PER_KWH * self.config.pue
        co2_g = energy_kwh * intensity.intensity_g_per_kwh
        record: dict[str, Any] = {
            "type": kind,
            "epoch": epoch,
            "start_unix_s": m.start_unix_s,
            "end_unix_s": m.end_unix_s,
            "duration_s": m.duration_s,
            "energy_j": m.energy_j,
            "methods": m.methods,
            "energy_kwh": energy_kwh,
            "co2_g": co2_g,
            "intensity": intensity.to_dict(),
            "pue": self.config.pue,
            "power_w": m.mean_power_w(),
        }
        if m.incomplete:
            record["incomplete"] = list(m.incomplete)
        return record, energy_kwh, co2_g, intensity

    def _metrics(
        self, m: Measurement, energy_kwh: float, co2_g: float, intensity: IntensityEstimate
    ) -> dict[str, float]:
        power = m.mean_power_w()
        out = {
            keys.EPOCH_ENERGY_KWH: energy_kwh,
            keys.EPOCH_CO2_G: co2_g,
            keys.EPOCH_DURATION_S: m.duration_s,
            keys.ENERGY_KWH: self._offset["energy_kwh"] + self._energy_kwh,
            keys.CO2_G: self._offset["co2_g"] + self._co2_g,
            keys.INTENSITY_G_PER_KWH: intensity.intensity_g_per_kwh,
        }
        if "total" in power:
            out[keys.POWER_W] = power["total"]
        for component, key in keys.COMPONENT_POWER.items():
            if component in power:
                out[key] = power[component]
        if self.prediction is not None:
            out[keys.PRED_ENERGY_KWH] = self.prediction.energy_kwh
            out[keys.PRED_CO2_G] = self.prediction.co2_g
            out[keys.PRED_DURATION_S] = self.prediction.duration_s
        return out

    def _maybe_predict(self, intensity: IntensityEstimate) -> None:
        """Predict the whole run from ``epochs_before_pred`` epochs on; log every prediction."""
        cfg = self.config
        if cfg.epochs_before_pred == 0 or self.epochs_monitored < cfg.epochs_before_pred:
            return
        first = self.prediction is None
        history = self._history  # read only, under the lock: no copy
        # epochs before the history: a resumed run's earlier segments, and any epochs that
        # fell out of the bounded history
        first_index = int(self._offset["epochs"]) + self.epochs_monitored - len(history)
        steps_done = None
        if self._steps_done is not None:
            steps_done = self._offset_steps + self._steps_done
        pred = self._predictor.predict(  # predict_run's prediction, at a cost that does not grow
            history,
            total_epochs=cfg.epochs,
            intensity_g_per_kwh=intensity.intensity_g_per_kwh,
            total_steps=cfg.total_steps,
            steps_done=steps_done,
            first_epoch_index=first_index,
            plans=tuple(plan for plan, _ in self._plans.values()),
        )
        if pred is None:
            if not self._no_prediction_noted:
                self._no_prediction_noted = True
                self.events.record(
                    "no_prediction",
                    "no prediction can be made: the run's length is unknown (set epochs, or "
                    "total_steps with steps reported per epoch)",
                    "predict",
                )
            return
        applied = intensity
        forecast = self._prediction_forecast(pred.remaining_duration_s)
        if forecast is not None:
            pred = pred.with_intensity(forecast.intensity_g_per_kwh)
            applied = forecast
        if first_index:  # else nothing is unseen (and the history's sums are not needed)
            pred = self._add_unseen(pred, history)
        self.prediction = pred
        self._write({"type": "prediction", **pred.to_dict(), "intensity": applied.to_dict()})
        if first and self._verbose >= 1:
            self._print(format_prediction(pred, applied, cfg.pue, cfg.decimal_precision))
        if first and cfg.stop_and_confirm:
            self._ask_to_continue(pred)

    def _add_unseen(self, pred: Prediction, history: Sequence[EpochSample]) -> Prediction:
        """Add what was measured before the history (resumed segments, dropped epochs)."""
        measured = {
            "energy_kwh": self._offset["energy_kwh"] + self._energy_kwh,
            "co2_g": self._offset["co2_g"] + self._co2_g,
            "duration_s": self._offset["duration_s"] + self._duration_s,
        }
        unseen = {
            "energy_kwh": measured["energy_kwh"] - sum(e.energy_kwh for e in history),
            "co2_g": measured["co2_g"] - sum(e.co2_g for e in history),
            "duration_s": measured["duration_s"] - sum(e.duration_s for e in history),
            "epochs": int(self._offset["epochs"]) + self.epochs_monitored - len(history),
        }
        if not unseen["epochs"]:
            return pred
        return _shift_prediction(pred, unseen)

    # -- budgets ---------------------------------------------------------------------------------
    def _check_budget(self, epoch: int) -> None:
        """Apply the budget after an epoch: warn, or set ``should_stop`` with a reason.

        Under a combined run these are the whole run's figures (every rank's energy, rank 0's
        time and intensity), the same on every rank, so every rank decides alike.
        """
        if self.budget is None:
            return
        spent = {
            "co2_g": self._offset["co2_g"] + self._co2_g,
            "energy_kwh": self._offset["energy_kwh"] + self._energy_kwh,
            "duration_s": self._offset["duration_s"] + self._duration_s,
        }
        self.apply_budget(check_budget(self.budget, spent, self.prediction), epoch)

    def apply_budget(self, decisions: list[BudgetDecision], epoch: int) -> None:
        """Act on budget decisions (:func:`~carbon_callbacks.core.budget.check_budget`'s).

        Each new decision is announced once (run log, print, warning); the first stop sets
        :attr:`should_stop` and :attr:`stop_reason`. Called after every epoch with this
        tracker's figures (the combined run's under data parallelism).
        """
        with self._lock:
            for decision in decisions:
                key = (decision.action, decision.quantity, decision.trigger)
                if key in self._budget_said or (decision.action == "stop" and self.should_stop):
                    continue
                self._budget_said.add(key)
                if decision.action == "stop":
                    self.should_stop = True
                    self.stop_reason = decision.reason
                self._announce(decision, epoch)

    def _announce(self, decision: BudgetDecision, epoch: int) -> None:
        """Log a budget decision in the run log, print it and raise it as a warning."""
        self._write({"type": "budget", "epoch": epoch, **decision.to_dict()})
        verb = "stopping training" if decision.action == "stop" else "warning"
        text = f"carbon_callbacks: budget {verb}: {decision.reason}"
        if self._verbose >= 1:  # rank 0 speaks (every rank takes the same decision)
            self._print(text)
        warnings.warn(text, CarbonCallbacksWarning, stacklevel=4)

    def _ask_to_continue(self, pred: Prediction) -> None:
        """carbontracker's ``stop_and_confirm``: ask once, on rank 0, after the first prediction."""
        if self._confirm_asked or self.ranks.rank != 0:
            return
        self._confirm_asked = True
        answer = None
        for _ in range(3):
            try:
                reply = input("carbon_callbacks: continue training (y/n)? ")
            except (EOFError, OSError, RuntimeError) as exc:
                self.events.record(
                    "confirm_unanswered",
                    f"stop_and_confirm could not read an answer ({exc!r}); training continues",
                    "budget",
                )
                break
            reply = reply.strip().lower()
            if reply in ("y", "yes", "n", "no"):
                answer = reply[0]
                break
        epoch = int(self._offset["epochs"]) + self.epochs_completed - 1
        if answer == "n":
            self.should_stop = True
            self.stop_reason = (
                "stopped by the user after the prediction "
                f"({pred.co2_g:.4g} gCO2eq, {pred.energy_kwh:.4g} kWh predicted; stop_and_confirm)"
            )
        self._write(
            {
                "type": "budget",
                "epoch": epoch,
                "action": "stop" if answer == "n" else "continue",
                "trigger": "user",
                "policy": "stop_and_confirm",
                "answer": answer,
                "predicted_co2_g": pred.co2_g,
                "predicted_energy_kwh": pred.energy_kwh,
                "reason": self.stop_reason if answer == "n" else "the user chose to continue",
            }
        )
        if answer == "n":
            self._print(f"carbon_callbacks: stopping training: {self.stop_reason}")

    # -- phases and blocks -----------------------------------------------------------------------
    def begin_phase(self, name: str) -> None:
        """Start measuring a named phase (see :meth:`phase`); pair with :meth:`end_phase`."""
        if not isinstance(name, str) or not name:
            raise ValueError("a phase needs a non-empty name")
        with self._sigterm.busy():
            self.start()
            try:
                if self._meter is not None:
                    self._phases.append((name, self._meter.mark()))
            except Exception as exc:  # noqa: BLE001
                self.events.record(
                    "hook_failed", f"phase {name!r} start failed: {exc!r}", "tracker"
                )

    def end_phase(self, name: str) -> None:
        """End the innermost open phase called ``name`` and record it."""
        with self._sigterm.busy():
            for i in range(len(self._phases) - 1, -1, -1):
                if self._phases[i][0] == name:
                    _, start = self._phases.pop(i)
                    self._end_phase(
                        name,
                        start,
                        nested=any(
                            snap.time_monotonic_s <= start.time_monotonic_s
                            for _, snap in self._phases
                        ),
                    )
                    return

    def plan_phase(
        self,
        name: str,
        every_epochs: int | None = None,
        work_ratio: float | None = None,
        *,
        every_steps: int | None = None,
        at_last_step: bool = False,
        source: str = "",
        strict: bool = True,
    ) -> PhasePlan | None:
        """Tell the predictor a phase the training loop has scheduled, before it runs.

        Integrations call this from the framework's settings (Lightning's
        ``check_val_every_n_epoch``, Keras' ``validation_freq``, the Hugging Face Trainer's
        ``eval_steps``, with their validation batches). The prediction then counts the
        phase's runs to come from this schedule, and costs it before its first run from
        ``work_ratio`` (see :class:`~carbon_callbacks.core.predict.PhasePlan`). Recorded in the
        run log as a ``plan`` record. A later call for the same name replaces the plan.

        Args:
            name: the phase's name, as passed to :meth:`phase` (e.g. ``"validation"``).
            every_epochs: it runs at the 0-based epochs ``e`` with ``(e + 1) % every_epochs == 0``.
            work_ratio: its batches per run / training batches per epoch, when known.
            every_steps: instead of ``every_epochs``: it runs after every optimisation step
                ``s`` (1-based, over the whole run) with ``s % every_steps == 0``; its runs to
                come are counted from the steps reported at each ``epoch_end(steps=...)``.
            at_last_step: a step plan also runs after the run's last step when that is not one
                of its multiples.
            source: where the plan comes from (e.g. ``"lightning"``), for the run log.
            strict: with False (integrations, which read the plan from a running trainer and
                must never break it), a setting that is not a plan is recorded as a
                ``plan_ignored`` event and None is returned instead of raising.

        Raises:
            ValueError: a setting that is not a plan (``every_epochs`` below 1, a negative
                ``work_ratio``...), with what to pass instead.
        """
        try:
            plan = PhasePlan(name, every_epochs, work_ratio, every_steps, at_last_step)
        except ValueError as exc:
            if strict:
                raise
            self.events.record("plan_ignored", f"{name} plan ignored: {exc}", source)
            return None
        with self._lock:
            self._plans[name] = (plan, source)
            if self._header_written:  # else written with the header at start
                self._write(_plan_record(plan, source))
        return plan

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Measure a named part of the work (``"validation"``, ``"synthesis"``...).

        Phases inside an epoch are part of the epoch's figures too; phases outside epochs are
        part of the run's totals (footer) only. Each is recorded with its own energy and CO2.
        """
        self.begin_phase(name)
        try:
            yield
        finally:
            self.end_phase(name)

    track = phase

    def _end_phase(self, name: str, start: Snapshot, nested: bool = False) -> None:
        try:
            with self._lock:
                if self._meter is None:
                    return
                m = self._meter.measure(start, self._meter.mark())
                epoch = self._offset["epochs"] + self.epochs_completed
                record, energy_kwh, co2_g, _ = self._measurement_record(m, "phase", epoch)
                record["name"] = name
                record["in_epoch"] = self._epoch_snap is not None
                # work outside epochs (and outside other phases) counts in the run's totals;
                # phases inside an epoch are already part of it
                record["counted"] = not record["in_epoch"] and not self._phases
                if record["counted"]:
                    self._add_to_totals(m, energy_kwh, co2_g)
                self._write(record)
                epoch_snap = self._epoch_snap
                if (
                    epoch_snap is not None
                    and not nested
                    and start.time_monotonic_s >= epoch_snap.time_monotonic_s
                ):
                    # a top-level phase inside the epoch: the predictor forecasts it on its own
                    self._epoch_phases.append(PhaseSample(name, m.duration_s, energy_kwh, co2_g))
        except Exception as exc:  # noqa: BLE001
            self.events.record("hook_failed", f"phase {name!r} end failed: {exc!r}", "tracker")

    def set_planned(
        self, epochs: int | None = None, total_steps: int | None = None, *, strict: bool = False
    ) -> None:
        """Tell the tracker the run's length once the framework knows it (before the run).

        Values the user gave at construction win; these fill gaps (e.g. Lightning's
        ``max_epochs``). A plan that contradicts the settings (e.g. fewer epochs than
        ``epochs_before_pred``) is not applied and is recorded; training is never stopped here.
        With ``strict=True`` (for integrations that know the plan when the trainer is built,
        before any training) it raises :class:`ConfigError` instead.
        """
        changes: dict[str, Any] = {}
        if epochs is not None and self.config.epochs is None:
            changes["epochs"] = epochs
        if total_steps is not None and self.config.total_steps is None:
            changes["total_steps"] = total_steps
        if not changes:
            return
        try:
            self.config = dataclasses.replace(self.config, **changes)
        except ConfigError as exc:  # the framework's plan contradicts a setting: say so, go on
            if strict:
                raise
            self.events.record(
                "plan_not_applied",
                f"the framework's plan {changes} was not applied: {exc}; predictions use the "
                "settings given",
                "tracker",
            )

    def record_metric(self, name: str, value: float, epoch: int | None = None) -> None:
        """Store a performance metric (e.g. final Dice) in the run log for model selection."""
        with self._sigterm.busy():
            self._write({"type": "metric", "name": name, "value": float(value), "epoch": epoch})

    # -- resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Cumulative totals to store in a checkpoint (JSON-ready; no tensors, no objects)."""
        return {
            "version": _STATE_VERSION,
            "energy_kwh": self._offset["energy_kwh"] + self._energy_kwh,
            "co2_g": self._offset["co2_g"] + self._co2_g,
            "duration_s": self._offset["duration_s"] + self._duration_s,
            "epochs": self._offset["epochs"] + self.epochs_completed,
            "steps": self._offset_steps + (self._steps_done or 0),
            "run_ids": [*self._prior_run_ids, self.run_id],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the totals of a checkpointed run. Call before the first epoch."""
        if not state:
            return
        if state.get("version") != _STATE_VERSION:
            self.events.record(
                "resume_state_ignored",
                f"checkpointed carbon state has version {state.get('version')!r}, expected "
                f"{_STATE_VERSION}; totals restart from zero",
                "tracker",
            )
            return
        with self._lock:
            if self.epochs_completed:
                self.events.record(
                    "resume_state_late",
                    "load_state_dict() called after epochs were measured; ignored to avoid "
                    "counting epochs twice",
                    "tracker",
                )
                return
            self._offset = {
                "energy_kwh": float(state["energy_kwh"]),
                "co2_g": float(state["co2_g"]),
                "duration_s": float(state["duration_s"]),
                "epochs": int(state["epochs"]),
            }
            self._prior_run_ids = [str(r) for r in state.get("run_ids", [])]
            self._offset_steps = int(state.get("steps", 0) or 0)

    # -- ranks -----------------------------------------------------------------------------------
    def set_gpu(self, gpu: int | str) -> None:
        """Measure this GPU (NVML index or UUID): what the framework put this rank on.

        Integrations call it before ``start()`` under data parallelism, so each rank measures
        its own device. A ``gpu_ids`` setting given by the user wins.
        """
        if self.config.gpu_ids is None:
            self._gpu_override = gpu

    def _join_ranks(self) -> None:
        """Find the other ranks (a collective when a process group is initialised)."""
        if self.config.distributed is False or world_size() <= 1 or _dist() is None:
            return
        try:
            self._group = RankGroup(self.config.distributed_timeout_s)
            self.ranks = self._group.info
        except Exception as exc:  # noqa: BLE001
            self._group = None
            self.ranks = local_rank_info()
            self.events.record(
                "ranks_not_combined",
                f"the ranks could not be joined ({exc!r}); each rank reports its own figures",
                "distributed",
            )
        if self.ranks.rank != 0:
            self._verbose = 0  # rank 0 speaks and writes the run log

    def _rank_config(self) -> CarbonConfig:
        """The settings for discovery on this rank: its own GPU; CPU/DRAM on host leaders.

        A rank that is not its host's leader drops CPU and DRAM, a stated CPU (``sim_cpu``)
        included. The GPU named by :meth:`set_gpu` applies only where NVML GPUs are measured
        (not with ``components='cpu'`` or a stated ``sim_gpu``).
        """
        changes: dict[str, Any] = {}
        if not self.ranks.host_leader:
            if self.config.components == "all":
                changes["components"] = "gpu"
            if self.config.sim_cpu is not None:
                changes.update(sim_cpu=None, sim_cpu_tdp=None)
        nvml_gpus = self.config.measures_gpu and self.config.sim_gpu is None
        gpu = self._gpu_override if nvml_gpus else None
        if gpu is None and nvml_gpus and self.ranks.distributed and self.config.gpu_ids is None:
            local = os.environ.get("LOCAL_RANK")
            if local is not None and local.isdigit():
                gpu = int(local)
                self.events.record(
                    "gpu_assumed",
                    f"rank {self.ranks.rank}: no GPU was named; measuring visible GPU {gpu} "
                    "(LOCAL_RANK). Integrations name it; with the core API call set_gpu()",
                    "distributed",
                )
        if gpu is not None:
            changes["gpu_ids"] = [gpu]
        return dataclasses.replace(self.config, **changes) if changes else self.config

    def _settle_intensity(self) -> None:
        """Once the ranks are known: decide who asks the intensity source.

        Rank 0 (or a process alone) starts a live provider that was put off at construction.
        Every other rank of a combined run starts nothing and applies rank 0's values, received
        with each epoch (:meth:`_combine`); a live provider this rank already started (it could
        not tell it was a rank at construction) is closed, so that requests do not grow with
        the number of ranks.
        """
        provider = self._intensity
        if self._group is not None and self.ranks.rank != 0:
            self._follows_rank_zero = True
            if self._owns_intensity and getattr(provider, "running", False):
                with contextlib.suppress(Exception):
                    provider.close()
                self.events.record(
                    "intensity_live_closed",
                    f"rank {self.ranks.rank} closed the live carbon-intensity source it had "
                    "started before the ranks were known; it uses rank 0's values",
                    "intensity",
                    warn=False,
                )
            return
        if isinstance(provider, DeferredLiveProvider):
            self._intensity = provider.activate(self.events)
        if self._group is not None:
            others = self.ranks.world_size - 1
            self.events.record(
                "intensity_from_rank_zero",
                f"the carbon intensity is asked for on rank 0 only; the {others} other rank(s) "
                "apply rank 0's value (and forecast) to every epoch, so their CO2eq figures, "
                "predictions and budget decisions are the same as rank 0's",
                "intensity",
                warn=False,
            )

    def _ranks_apart(self, message: str) -> None:
        """An exchange between the ranks failed: record why; each rank goes on alone."""
        self._group = None
        self.events.record("ranks_not_combined", message, "distributed")
        self._intensity_alone()

    def _intensity_alone(self) -> None:
        """The ranks no longer exchange: this rank asks its own source from now on."""
        if not self._follows_rank_zero:
            return
        self._follows_rank_zero = False
        if isinstance(self._intensity, DeferredLiveProvider):
            self._intensity = self._intensity.activate(self.events)

    def _combine(self, m: Measurement) -> Measurement:
        """Merge every rank's measurement of the same epoch (a collective on all ranks).

        Rank 0 adds its epoch window and the intensity it applies to it (a
        :class:`_RankZeroShare`); every rank then records rank 0's window, duration and
        intensity, so CO2eq, predictions and budget decisions agree across ranks.
        """
        if self._group is None:
            return m
        share = None
        if self.ranks.rank == 0:
            self._epoch_intensity = self._intensity_over(m.start_unix_s, m.end_unix_s)
            share = _RankZeroShare(
                m.start_unix_s,
                m.end_unix_s,
                m.duration_s,
                self._epoch_intensity,
                can_forecast(self._intensity),
            )
        try:
            parts = self._group.gather(
                (self.ranks.rank, m.energy_j, m.methods, m.components, m.incomplete, share,
                 m.duration_s)
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            self._ranks_apart(
                f"combining the ranks' epoch failed ({exc!r}); from now on each rank reports "
                "its own figures"
            )
            return m
        energy, methods, components, incomplete, window = {}, {}, {}, [], {}
        for rank_, e, meth, comp, inc, _, seconds in parts:
            for name in e:
                key = f"rank{rank_}/{name}"
                energy[key], methods[key], components[key] = e[name], meth[name], comp[name]
                window[key] = seconds  # this rank's own epoch: its power is its J over it
            incomplete += [f"rank{rank_}/{n}" for n in inc]
        combined = dataclasses.replace(
            m,
            energy_j=energy,
            methods=methods,
            components=components,
            incomplete=tuple(incomplete),
            window_s=window,
        )
        lead = next((p[5] for p in parts if p[0] == 0), None)
        if not isinstance(lead, _RankZeroShare):
            return combined
        self._epoch_intensity = self._rank_zero_intensity = lead.intensity
        self._rank_zero_forecasts = lead.forecasts
        return dataclasses.replace(
            combined,
            start_unix_s=lead.start_unix_s,
            end_unix_s=lead.end_unix_s,
            duration_s=lead.duration_s,
        )

    def _take_epoch_intensity(self) -> IntensityEstimate | None:
        """The intensity the ranks agreed for the epoch just combined (once), else ``None``."""
        agreed, self._epoch_intensity = self._epoch_intensity, None
        return agreed

    def _prediction_forecast(self, remaining_s: float) -> IntensityEstimate | None:
        """The forecast over the next ``remaining_s`` seconds for a prediction, or ``None``.

        Combined ranks use rank 0's: when rank 0's source can forecast (it said so in the
        epoch's exchange, so every rank knows), rank 0 asks it and sends the answer to all in
        one small exchange; otherwise nobody asks and every rank keeps the epoch's intensity.
        """
        if self._group is None:
            now = time.time()
            return self._forecast_over(now, now + remaining_s)
        if not self._rank_zero_forecasts:
            return None
        forecast = None
        if self.ranks.rank == 0:
            now = time.time()
            forecast = self._forecast_over(now, now + remaining_s)
        try:
            return self._group.broadcast(forecast, src=0)
        except Exception as exc:  # noqa: BLE001
            self._ranks_apart(
                f"sending rank 0's intensity forecast failed ({exc!r}); from now on each rank "
                "reports its own figures"
            )
            return forecast

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (spawned workers, ddp_spawn) is allowed before ``start()`` only."""
        if self._started:
            raise TypeError("a started CarbonTracker cannot be pickled")
        state = self.__dict__.copy()
        for key in ("_lock", "events", "_events_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._events_lock = threading.Lock()
        self.events = EventLog(listener=self._on_event)

    # -- accessors -------------------------------------------------------------------------------
    def unwritten_records(self) -> list[dict[str, Any]]:
        """Run-log records that could not be written to disk, oldest first (kept in memory).

        Empty when the run log is complete or when there is none (``log_dir=None``). After a
        disk failure (full, read-only, removed) the tracker keeps measuring and keeps these
        records, up to ``MAX_PENDING``, retrying them on every write and at :meth:`stop`; what is
        still here after ``stop()`` exists nowhere else (save it, e.g. one ``json.dumps`` per
        line). :meth:`totals` and ``last_metrics`` stay available either way.
        """
        return self._writer.pending_records() if self._writer is not None else []

    def totals(self) -> dict[str, float]:
        """Cumulative figures over the measured epochs (resumed segments included)."""
        return {
            keys.ENERGY_KWH: self._offset["energy_kwh"] + self._energy_kwh,
            keys.CO2_G: self._offset["co2_g"] + self._co2_g,
            keys.DURATION_S: self._offset["duration_s"] + self._duration_s,
        }

    def epoch_so_far(self) -> dict[str, float] | None:
        """Duration (s), energy (kWh, PUE included) and CO2eq (g) of the open epoch, read now.

        For progress displays: a meter mark (no slow I/O), nothing is recorded. ``None`` when
        no epoch is open or nothing is measured. Never raises.
        """
        try:
            with self._lock:
                start, meter = self._epoch_snap, self._meter
                if start is None or meter is None:
                    return None
                m = meter.measure(start, meter.mark())
            energy_kwh = m.total_energy_j / J_PER_KWH * self.config.pue
            intensity = self._intensity_over(m.start_unix_s, m.end_unix_s)
            return {
                "duration_s": m.duration_s,
                "energy_kwh": energy_kwh,
                "co2_g": energy_kwh * intensity.intensity_g_per_kwh,
            }
        except Exception:  # noqa: BLE001 - a progress read must never break anything
            return None

    @property
    def intensity(self) -> IntensityProvider:
        """The intensity provider in use."""
        return self._intensity

    @property
    def sensors(self) -> list[Any]:
        """Provenance of the sensors in use (empty before ``start()``)."""
        return self._meter.sensor_infos if self._meter is not None else []

    @property
    def ranks_combined(self) -> int:
        """Ranks whose measurements this tracker's epochs hold: the world size while the ranks
        are combined (see :meth:`_combine`), else 1 (alone, or after an exchange failed)."""
        return self.ranks.world_size if self._group is not None else 1

    # -- internals -------------------------------------------------------------------------------
    def _intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        """The provider's intensity for the window; if it raises, the packaged annual average.

        A live source failing must not cost the epoch its record: the fallback is labelled
        (its kind and source say what it is), warned once per failure streak, and the
        provider is asked again next time (``intensity_recovered`` when it answers).

        A rank other than 0 of a combined run holds rank 0's last value instead (see
        :func:`~carbon_callbacks.core.intensity.ranks.held_over`): its epochs get rank 0's own
        value through :meth:`_combine`; this serves phases, a partial epoch and progress reads.
        """
        if self._follows_rank_zero and self._rank_zero_intensity is not None:
            return held_over(self._rank_zero_intensity, start_unix_s, end_unix_s)
        try:
            estimate = self._intensity.intensity_over(start_unix_s, end_unix_s)
        except Exception as exc:  # noqa: BLE001 - a provider must never cost an epoch
            fallback = self._static_intensity()
            estimate = fallback.intensity_over(start_unix_s, end_unix_s)
            if not self._intensity_failing:
                self._intensity_failing = True
                self.events.record(
                    "intensity_failed",
                    f"the carbon-intensity source for {self._zone_label()} failed ({exc!r}); "
                    f"using {estimate.describe()} until it answers again",
                    "intensity",
                )
            return estimate
        if self._intensity_failing:
            self._intensity_failing = False
            self.events.record(
                "intensity_recovered",
                f"the carbon-intensity source for {self._zone_label()} answers again",
                "intensity",
                warn=False,
            )
        return estimate

    def _forecast_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate | None:
        """The provider's forecast, or ``None`` (the caller then uses the last epoch's value)."""
        try:
            return self._intensity.forecast_over(start_unix_s, end_unix_s)
        except Exception as exc:  # noqa: BLE001
            self.events.record(
                "intensity_forecast_failed",
                f"the carbon-intensity forecast for {self._zone_label()} failed ({exc!r}); the "
                "prediction uses the intensity of the last epoch instead",
                "intensity",
            )
            return None

    def _zone_label(self) -> str:
        return str(getattr(self._intensity, "zone", None) or "this run")

    def _static_intensity(self) -> IntensityProvider:
        """The packaged annual average for the provider's zone (or its country, e.g. DK for
        DK1), else the world average labelled as a fallback."""
        if self._intensity_fallback is None:
            zone = str(getattr(self._intensity, "zone", "") or "")
            for candidate in dict.fromkeys((zone, zone[:2])):
                try:
                    self._intensity_fallback = StaticIntensityProvider(candidate)
                    break
                except Exception:  # noqa: BLE001 - not in the tables
                    continue
            else:
                self._intensity_fallback = StaticIntensityProvider.world_fallback()
        return self._intensity_fallback

    def _close_intensity(self) -> None:
        """Stop the provider's background work, if this tracker made the provider."""
        if self._owns_intensity:
            try:
                self._intensity.close()
            except Exception as exc:  # noqa: BLE001
                self.events.record(
                    "intensity_close_failed",
                    f"closing the intensity source failed: {exc!r}",
                    "intensity",
                    warn=False,
                )

    def _write(self, record: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.write(record)

    def _on_event(self, event: Event) -> None:
        with self._events_lock:
            if not self._header_written:
                self._pending_events.append(event)
                return
        self._write({"type": "event", **event.to_dict()})

    def _log_path_for_report(self) -> str | None:
        """The run log's path for the final report, saying so when records are not on disk."""
        writer = self._writer
        if writer is None or not writer.pending:
            return self.log_path
        return (
            f"{self.log_path} is INCOMPLETE: {writer.pending} record(s) could not be written "
            f"({writer.last_error}); they are kept in memory: CarbonTracker.unwritten_records()"
        )

    def _print(self, text: str) -> None:
        try:
            print(text, file=sys.stdout, flush=True)
        except Exception:  # noqa: BLE001 - a closed stdout must not break training
            pass


def _shift_prediction(pred: Prediction, unseen: dict[str, float]) -> Prediction:
    """Add figures measured before the prediction's history (resumed segments...)."""
    e, g, s = unseen["energy_kwh"], unseen["co2_g"], unseen["duration_s"]
    return dataclasses.replace(
        pred,
        after_epochs=pred.after_epochs + int(unseen["epochs"]),
        duration_s=pred.duration_s + s,
        duration_s_low=pred.duration_s_low + s,
        duration_s_high=pred.duration_s_high + s,
        energy_kwh=pred.energy_kwh + e,
        energy_kwh_low=pred.energy_kwh_low + e,
        energy_kwh_high=pred.energy_kwh_high + e,
        co2_g=pred.co2_g + g,
        co2_g_low=pred.co2_g_low + g,
        co2_g_high=pred.co2_g_high + g,
        measured_duration_s=pred.measured_duration_s + s,
        measured_energy_kwh=pred.measured_energy_kwh + e,
        measured_co2_g=pred.measured_co2_g + g,
    )


def _plan_record(plan: PhasePlan, source: str) -> dict[str, Any]:
    """The run-log record of a phase plan (type ``plan``)."""
    return {"type": "plan", **plan.to_dict(), "source": source}
