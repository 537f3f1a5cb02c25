"""The sensor interface shared by every energy source.

A sensor is either a *counter* (it reports cumulative energy in joules since it was opened, e.g.
NVML's total-energy counter or RAPL's ``energy_uj``) or a *power* sensor (it reports the power
drawn now, in watts, and the meter integrates the samples by the trapezoid rule). Counter
sensors that can also read power cheaply do so through :meth:`Sensor.read_power_w`; the meter
uses that to bridge the last counter sample and a mark taken in a training hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

#: How a sensor obtains its number (recorded with every measurement).
METHODS = ("counter", "sampled", "modelled", "constant")
#: What a sensor measures.
COMPONENTS = ("gpu", "cpu", "dram")


class SensorError(RuntimeError):
    """A sensor could not be opened or read. The message says what happened and what to do."""


@dataclass(frozen=True)
class SensorInfo:
    """Provenance of one sensor.

    Attributes:
        name: unique key within a run, e.g. ``"gpu:0"``, ``"cpu:package-0"``, ``"dram:model"``.
        component: ``"gpu"``, ``"cpu"`` or ``"dram"``.
        device: what is measured, e.g. ``"NVIDIA H100 80GB HBM3 (GPU-1a2b...)"``.
        method: ``"counter"`` (hardware energy counter), ``"sampled"`` (power samples integrated),
            ``"modelled"`` (a model such as TDP x utilisation) or ``"constant"`` (user-stated W).
        detail: one line on how the number is made (e.g. ``"TDP 95 W from table x utilisation"``).
    """

    name: str
    component: str
    device: str
    method: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"sensor method must be one of {METHODS}, got {self.method!r}")
        if self.component not in COMPONENTS:
            raise ValueError(
                f"sensor component must be one of {COMPONENTS}, got {self.component!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


class Sensor(ABC):
    """One energy source.

    Subclasses set :attr:`info` and :attr:`is_counter`, and implement :meth:`read_energy_j`
    (counters) or :meth:`read_power_w` (power sensors). Reads may raise :class:`SensorError`
    (or any exception); the meter then records the failure and asks :meth:`fallback` for a
    replacement. Reads are called from the meter's thread and, for :meth:`read_power_w` of
    sensors with ``cheap_power = True``, from the training thread at marks: keep them short.

    What a sensor can do beyond that is declared by the class attributes below (the meter reads
    these flags and never probes a sensor for methods); the defaults describe a plain sensor.
    """

    info: SensorInfo
    #: True when :meth:`read_energy_j` returns a cumulative counter in joules.
    is_counter: bool = False
    #: True when :meth:`read_power_w` costs microseconds and may be called from a training hook.
    cheap_power: bool = False
    #: True when :meth:`read_power_w` returns the mean power since its previous read (a model
    #: over utilisation since the last call), not the power at the instant. The meter then
    #: integrates each reading over the interval it covers, and discards the first reading
    #: (it covers the time before the meter started).
    power_is_interval_mean: bool = False
    #: Seconds by which :meth:`read_power_w` lags the power drawn (0: instantaneous). A reading
    #: averaged over a trailing window of W seconds lags by about W / 2; the meter adds that
    #: lag times the change of the reading to the integrated energy, so a ramp from idle is
    #: counted in the window where it happened.
    power_lag_s: float = 0.0
    #: True for a counter that advances in steps (NVML's energy counter, ~0.1 s): it dates its
    #: values at their steps (:meth:`read_energy_dated`) and says when a read is freshest
    #: (:meth:`next_read_time`).
    counter_steps: bool = False

    def read_energy_dated(self) -> tuple[float, float | None] | None:
        """(cumulative J, monotonic time the counter reached them, or None when not known).

        None when this read cannot be dated (stepping counters: it straddled a step). The
        default is :meth:`read_energy_j` without a date.
        """
        return self.read_energy_j(), None

    def next_read_time(self, after: float) -> float | None:
        """Best monotonic time >= ``after`` to read a stepping counter (None: any time)."""
        return None

    def drain_dated(self) -> list[tuple[float, float]] | None:
        """Counter values a helper process read since the last call: (J, monotonic step time).

        None when the meter must read the counter itself (the default: no helper).
        """
        return None

    @property
    def feed_live(self) -> bool:
        """True while a helper process delivers this counter's values (:meth:`drain_dated`)."""
        return False

    def set_read_interval(self, seconds: float) -> None:
        """Tell a helper process how often (s) the meter wants a fresh counter value."""

    def read_energy_j(self) -> float:
        """Cumulative energy in joules since the sensor was opened (counters only)."""
        raise NotImplementedError(f"{type(self).__name__} is not a counter sensor")

    @abstractmethod
    def read_power_w(self) -> float:
        """Power drawn now, in watts."""

    def fallback(self) -> Sensor | None:
        """A replacement sensor to use after this one fails, or ``None`` (then it is lost)."""
        return None

    def drain_notices(self) -> list[str]:
        """Degradations the sensor handled itself since the last call (the meter records them).

        A sensor that keeps its method but loses part of its means (e.g. a GPU whose
        instantaneous power field stops answering, so that bridging falls back to the averaged
        power) says so here, once, instead of failing; :attr:`info` already describes the new
        state.
        """
        notices = getattr(self, "_notices", None)
        if not notices:
            return []
        self._notices: list[str] = []
        return notices

    def _notice(self, message: str) -> None:
        """Queue one degradation message for :meth:`drain_notices`."""
        if getattr(self, "_notices", None) is None:
            self._notices = []
        self._notices.append(message)

    def close(self) -> None:
        """Release any resource (file handles, NVML). Idempotent."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r}, method={self.info.method!r})"
