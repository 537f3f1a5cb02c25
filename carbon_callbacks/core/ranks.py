"""The session's side of data parallelism: who measures what, and the per-epoch exchange.

Each rank measures its own GPU; CPU and DRAM are measured once per host, by its lowest rank
(:meth:`RankExchange.rank_config`). After every epoch the ranks gather their measurements
(:meth:`RankExchange.combine`): every rank then holds the same combined epoch, with rank 0's
window, duration and carbon intensity, so CO2eq, predictions and budget decisions agree on every
rank and rank 0 alone writes the run log. When an exchange fails, the ranks go on alone, each
with its own figures, and say so once. The collectives live in
:mod:`carbon_callbacks.core.distributed`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.distributed import RankGroup, RankInfo, _dist, local_rank_info
from carbon_callbacks.core.distributed import world_size as _world_size
from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity.applied import AppliedIntensity
from carbon_callbacks.core.intensity.base import IntensityEstimate
from carbon_callbacks.core.meter import Measurement
from carbon_callbacks.core.sensors.base import Sensor


@dataclasses.dataclass(frozen=True)
class RankZeroShare:
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


class RankExchange:
    """This process's rank, and the exchanges that make every rank record the same run.

    Attributes:
        info: rank, world size, hosts and whether this rank leads its host.
        group: the process group while the ranks are combined, else ``None``.
        gpu: the GPU the framework put this rank on (``CarbonTracker.set_gpu``), or ``None``.
    """

    def __init__(self) -> None:
        self.info = RankInfo(host_leader=True)
        self.group: RankGroup | None = None
        self.gpu: int | str | None = None
        self._rank_zero_forecasts = False
        self._epoch_intensity: IntensityEstimate | None = None

    @property
    def combined(self) -> bool:
        """Whether the ranks' measurements are exchanged and summed."""
        return self.group is not None

    def join(self, config: CarbonConfig, events: EventLog) -> None:
        """Find the other ranks (a collective when a process group is initialised)."""
        if config.distributed is False or _world_size() <= 1 or _dist() is None:
            return
        try:
            self.group = RankGroup(config.distributed_timeout_s)
            self.info = self.group.info
        except Exception as exc:  # noqa: BLE001
            self.group = None
            self.info = local_rank_info()
            events.record(
                "ranks_not_combined",
                f"the ranks could not be joined ({exc!r}); each rank reports its own figures",
                "distributed",
            )

    def rank_config(self, config: CarbonConfig, events: EventLog) -> CarbonConfig:
        """The settings for discovery on this rank: its own GPU; CPU/DRAM on host leaders.

        A rank that is not its host's leader drops CPU and DRAM, a stated CPU (``sim_cpu``)
        included. The GPU named by ``set_gpu`` applies only where NVML GPUs are measured (not
        with ``components='cpu'`` or a stated ``sim_gpu``).
        """
        changes: dict[str, Any] = {}
        if not self.info.host_leader:
            if config.components == "all":
                changes["components"] = "gpu"
            if config.sim_cpu is not None:
                changes.update(sim_cpu=None, sim_cpu_tdp=None)
        nvml_gpus = config.measures_gpu and config.sim_gpu is None
        gpu = self.gpu if nvml_gpus else None
        if gpu is None and nvml_gpus and self.info.distributed and config.gpu_ids is None:
            local = os.environ.get("LOCAL_RANK")
            if local is not None and local.isdigit():
                gpu = int(local)
                events.record(
                    "gpu_assumed",
                    f"rank {self.info.rank}: no GPU was named; measuring visible GPU {gpu} "
                    "(LOCAL_RANK). Integrations name it; with the core API call set_gpu()",
                    "distributed",
                )
        if gpu is not None:
            changes["gpu_ids"] = [gpu]
        return dataclasses.replace(config, **changes) if changes else config

    def sensors(
        self, config: CarbonConfig, given: list[Sensor] | None, events: EventLog
    ) -> list[Sensor]:
        """The sensors this rank measures (``given`` ones, else discovered): its GPU; CPU and
        DRAM on its host's leader only. None at all is recorded (unmeasured, not zero)."""
        from carbon_callbacks.core.sensors.discovery import discover_sensors

        rank_config = self.rank_config(config, events)
        sensors = given
        if not self.info.host_leader and not rank_config.measures_gpu:
            sensors = []  # CPU and DRAM are the host leader's; this rank has nothing else
            events.record(
                "rank_measures_nothing",
                f"rank {self.info.rank} measures nothing: components={rank_config.components!r} "
                "and CPU/DRAM are measured once per host, by its lowest rank",
                "distributed",
                warn=False,
            )
        elif sensors is None:
            sensors = discover_sensors(rank_config, events)
        elif not self.info.host_leader:
            sensors = [s for s in sensors if s.info.component == "gpu"]
        if not sensors and (self.info.host_leader or rank_config.measures_gpu):
            events.record(
                "no_sensor",
                "no energy sensor is available for the chosen components "
                f"({config.components!r}); energy will be reported as unmeasured, not zero",
                "tracker",
            )
        return sensors

    def header(self) -> dict[str, Any]:
        """The run log header's ``ranks``."""
        ranks: dict[str, Any] = {
            "world_size": self.info.world_size,
            "hosts": self.info.hosts,
            "combined": self.combined,
        }
        if self.combined:
            ranks["intensity_from_rank"] = 0  # every rank applies rank 0's values
        return ranks

    def settle_intensity(self, intensity: AppliedIntensity, events: EventLog) -> None:
        """Once the ranks are known: rank 0 (or a process alone) starts a live provider that was
        put off at construction; every other rank of a combined run starts nothing and applies
        rank 0's values, received with each epoch."""
        if self.group is not None and self.info.rank != 0:
            intensity.follow_rank_zero(self.info.rank, events)
            return
        intensity.activate(events)
        if self.group is not None:
            events.record(
                "intensity_from_rank_zero",
                "the carbon intensity is asked for on rank 0 only; the "
                f"{self.info.world_size - 1} other rank(s) apply rank 0's value (and forecast) to "
                "every epoch, so their CO2eq figures, predictions and budget decisions are the "
                "same as rank 0's",
                "intensity",
                warn=False,
            )

    def gather_sensors(
        self, infos: list[dict[str, Any]], intensity: AppliedIntensity, events: EventLog
    ) -> list[dict[str, Any]]:
        """Every rank's sensors, named ``rank<r>/<name>``; this rank's alone if not combined."""
        if self.group is None:
            return infos
        try:
            every_rank = self.group.gather(infos)
        except Exception as exc:  # noqa: BLE001
            self.apart(
                f"the ranks could not exchange their sensors ({exc!r}); each rank reports its own "
                "figures",
                intensity,
                events,
            )
            return infos
        return [
            {**i, "name": f"rank{r}/{i['name']}"} for r, rank_infos in enumerate(every_rank)
            for i in rank_infos
        ]  # fmt: skip

    def apart(self, message: str, intensity: AppliedIntensity, events: EventLog) -> None:
        """An exchange between the ranks failed: record why; each rank goes on alone."""
        self.group = None
        events.record("ranks_not_combined", message, "distributed")
        intensity.alone(events)

    def combine(self, m: Measurement, intensity: AppliedIntensity, events: EventLog) -> Measurement:
        """Merge every rank's measurement of the same epoch (a collective on all ranks).

        Rank 0 adds its epoch window and the intensity it applies to it (a
        :class:`RankZeroShare`); every rank then records rank 0's window, duration and
        intensity (taken once by :meth:`take_epoch_intensity`).
        """
        if self.group is None:
            return m
        share = None
        if self.info.rank == 0:
            self._epoch_intensity = intensity.over(m.start_unix_s, m.end_unix_s, events)
            share = RankZeroShare(
                m.start_unix_s,
                m.end_unix_s,
                m.duration_s,
                self._epoch_intensity,
                intensity.can_forecast(),
            )
        try:
            parts = self.group.gather(
                (self.info.rank, m.energy_j, m.methods, m.components, m.incomplete, share,
                 m.duration_s)
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            self.apart(
                f"combining the ranks' epoch failed ({exc!r}); from now on each rank reports "
                "its own figures",
                intensity,
                events,
            )
            return m
        combined = _merged(m, parts)
        lead = next((p[5] for p in parts if p[0] == 0), None)
        if not isinstance(lead, RankZeroShare):
            return combined
        self._epoch_intensity = intensity.rank_zero = lead.intensity
        self._rank_zero_forecasts = lead.forecasts
        return dataclasses.replace(
            combined,
            start_unix_s=lead.start_unix_s,
            end_unix_s=lead.end_unix_s,
            duration_s=lead.duration_s,
        )

    def take_epoch_intensity(self) -> IntensityEstimate | None:
        """The intensity the ranks agreed for the epoch just combined (once), else ``None``."""
        agreed, self._epoch_intensity = self._epoch_intensity, None
        return agreed

    def prediction_forecast(
        self, remaining_s: float, intensity: AppliedIntensity, events: EventLog
    ) -> IntensityEstimate | None:
        """The forecast over the next ``remaining_s`` seconds for a prediction, or ``None``.

        Combined ranks use rank 0's: when rank 0's source can forecast (it said so in the
        epoch's exchange, so every rank knows), rank 0 asks it and sends the answer to all in
        one small exchange; otherwise nobody asks and every rank keeps the epoch's intensity.
        """
        if self.group is None:
            now = time.time()
            return intensity.forecast_over(now, now + remaining_s, events)
        if not self._rank_zero_forecasts:
            return None
        forecast = None
        if self.info.rank == 0:
            now = time.time()
            forecast = intensity.forecast_over(now, now + remaining_s, events)
        try:
            return self.group.broadcast(forecast, src=0)
        except Exception as exc:  # noqa: BLE001
            self.apart(
                f"sending rank 0's intensity forecast failed ({exc!r}); from now on each rank "
                "reports its own figures",
                intensity,
                events,
            )
            return forecast

    def close(self) -> None:
        """Leave the process group (the ranks are no longer combined)."""
        if self.group is not None:
            self.group.close()
            self.group = None


def _merged(m: Measurement, parts: list[Any]) -> Measurement:
    """``m`` holding every rank's sensors, named ``rank<r>/<name>``, each with its own window."""
    energy, methods, components, incomplete, window = {}, {}, {}, [], {}
    for rank_, e, meth, comp, inc, _, seconds in parts:
        for name in e:
            key = f"rank{rank_}/{name}"
            energy[key], methods[key], components[key] = e[name], meth[name], comp[name]
            window[key] = seconds  # this rank's own epoch: its power is its J over it
        incomplete += [f"rank{rank_}/{n}" for n in inc]
    return dataclasses.replace(
        m,
        energy_j=energy,
        methods=methods,
        components=components,
        incomplete=tuple(incomplete),
        window_s=window,
    )
