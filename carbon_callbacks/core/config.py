"""One validated settings object shared by the tracker and every integration.

Bad settings are refused here, at construction, with a message that says what to do; nothing
about a setting is discovered to be wrong after an epoch has run. The argument names follow
carbontracker's where they overlap (``epochs``, ``epochs_before_pred``, ``monitor_epochs``,
``log_dir``, ``components``, ``sim_cpu``...), so its users switch by changing an import.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: Environment variables read when the matching setting is not given.
ENV_ZONE = "CARBON_CALLBACKS_ZONE"
ENV_INTENSITY = "CARBON_CALLBACKS_INTENSITY_G_PER_KWH"
ENV_OFFLINE = "CARBON_CALLBACKS_OFFLINE"
ENV_PUE = "CARBON_CALLBACKS_PUE"
ENV_ELECTRICITYMAPS_TOKEN = "CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN"

#: Values of ``live_intensity`` that name one provider.
LIVE_PROVIDERS = ("energidataservice", "gb", "electricitymaps")
#: Default base URLs of the live providers.
ENERGIDATASERVICE_URL = "https://api.energidataservice.dk"
GB_CARBON_INTENSITY_URL = "https://api.carbonintensity.org.uk"
ELECTRICITYMAPS_URL = "https://api.electricitymaps.com/v3"
IP_GEOLOCATION_URL = "https://ipinfo.io/json"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

_COMPONENTS = ("all", "gpu", "cpu")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting is invalid. The message names the setting and says what would be valid."""


def _env_flag(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r}: use 1/0, true/false, yes/no")


def _positive_float(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool):  # float(True) == 1.0: a flag where a number belongs
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return number


@dataclass
class CarbonConfig:
    """Settings for one tracked run.

    Attributes:
        epochs: epochs the run will train (needed for a prediction; ``None`` for unknown).
        epochs_before_pred: epochs measured before the first prediction (0 = no prediction).
        monitor_epochs: epochs to measure; -1 = all. Must be >= ``epochs_before_pred``.
        total_steps: total optimisation steps, for step-based runs (predict from steps).
        log_dir: folder for the run log (JSON lines); ``None`` writes no file.
        log_file_prefix: prefix for the run log's file name.
        run_name: a name for this run, stored in the log and shown in reports.
        components: ``"all"``, ``"gpu"`` or ``"cpu"`` (``"cpu"`` includes DRAM).
        gpu_ids: GPUs to measure (NVML indices or UUIDs); ``None`` = those this process sees
            through ``CUDA_VISIBLE_DEVICES`` (all when unset).
        pue: power usage effectiveness of the data centre, multiplied into kWh (>= 1.0).
            ``None`` reads ``$CARBON_CALLBACKS_PUE``, else 1.0 (IT energy only). Always recorded.
        intensity_g_per_kwh: a user-stated carbon intensity (gCO2eq/kWh); wins over any zone.
        zone: where the electricity comes from: ISO 3166 alpha-2 country (``"DK"``) or US state
            (``"US-CA"``). Falls back to ``$CARBON_CALLBACKS_ZONE``, then to the world average
            (labelled as a fallback).
        offline: when True no socket is ever opened. ``None`` reads ``$CARBON_CALLBACKS_OFFLINE``;
            when that is unset too, the network is allowed only if a setting asks for it
            (``live_intensity`` or ``ip_geolocation``), else offline.
        interval_s: seconds between the meter's samples (default 1.0).
        counter_interval_s: seconds between reads of NVML's energy counters. ``None`` (default):
            every counter step (~0.1 s). Each read keeps a CPU core busy for ~4 ms; set a
            number (0.05 to 3600 s) to read less often.
        gpu_method: ``"auto"`` (NVML's energy counter where supported, else sampled power) or
            ``"sampled"`` (force power sampling, e.g. to compare the two methods).
        sim_gpu / sim_gpu_watts / sim_gpu_util: a user-stated GPU drawing
            ``sim_gpu_watts x sim_gpu_util`` W (carbontracker's semantics), labelled ``constant``.
        sim_cpu / sim_cpu_tdp / sim_cpu_util: the same for the CPU.
        rapl_root: powercap sysfs root (tests point it at a temporary tree).
        verbose: 0 silent, 1 prediction and final report, 2 also every epoch.
        ignore_errors: accepted for carbontracker compatibility; this package never exits.
        decimal_precision: significant digits of the figures in console reports.
        distributed: combine the ranks of a data-parallel run (each rank measures its own GPU,
            one rank per host measures CPU and DRAM, rank 0 logs the sum). ``None`` (default)
            does so whenever ``torch.distributed`` is initialised with more than one rank;
            ``False`` keeps every rank alone.
        distributed_timeout_s: hard timeout of the tracker's exchanges between ranks (s).
        monitor_metric: name of a performance metric the integration records in the run log at
            the end (its last value, e.g. ``"val/dice"``), for model selection.
        live_intensity: ``None`` (default): live values when the network is allowed
            (``offline=False``) and the zone has a live source (DK, DK1, DK2 and GB without a
            key; any zone with an Electricity Maps token); ``True``: require them (implies
            ``offline=False`` unless offline is set); ``False``: never; or a provider name,
            ``"energidataservice"``, ``"gb"`` or ``"electricitymaps"``.
        electricitymaps_token: Electricity Maps API token; ``None`` reads
            ``$CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN``. Never shown in reprs or logs.
        electricitymaps_zone: the zone code to ask Electricity Maps for when it differs from
            ``zone`` (e.g. ``"US-CAL-CISO"``); ``electricitymaps_lat_lon``: a (lat, lon) instead.
        electricitymaps_base_url / energidataservice_base_url / gb_base_url: the providers'
            addresses (https; plain http only to a loopback host, for tests).
        gb_region / gb_postcode: a GB region id (1-17) or an outward postcode for the regional
            forecast of the GB Carbon Intensity API (imply ``zone="GB"``).
        cloud_region: a cloud region name (``"eu-west-1"``, ``"gcp:europe-west1"``) for the
            location when no zone is given; else read from environment variables.
        ip_geolocation: opt in to one IP geolocation lookup when no zone is known (allows the
            network for it unless offline is set, without turning live values on:
            ``live_intensity`` then defaults to False); ``ip_geolocation_url`` is the service.
        budget_g / budget_kwh / budget_s: limits of the run in grams CO2eq, kWh (PUE included)
            and seconds of training; a number in that unit or a text with a unit
            (``"2.5 kg"``, ``"500 Wh"``, ``"90 min"``). Stored in the setting's unit.
        budget_policy: ``"warn"`` (the default when a limit is set), ``"stop-when-predicted-over"``
            or ``"stop-when-spent"`` (see :mod:`carbon_callbacks.core.budget`).
        stop_and_confirm: carbontracker's option: after the first prediction, ask
            "Continue training (y/n)?" on the terminal and stop on "n". Off by default; needs an
            interactive stdin (refused otherwise).
    """

    epochs: int | None = None
    epochs_before_pred: int = 1
    monitor_epochs: int = -1
    total_steps: int | None = None
    log_dir: str | os.PathLike[str] | None = "carbon_logs"
    log_file_prefix: str = ""
    run_name: str | None = None
    components: str = "all"
    gpu_ids: Sequence[int | str] | None = None
    pue: float | None = None
    intensity_g_per_kwh: float | None = None
    zone: str | None = None
    offline: bool | None = None
    interval_s: float = 1.0
    counter_interval_s: float | None = None
    gpu_method: str = "auto"
    sim_gpu: str | None = None
    sim_gpu_watts: float | None = None
    sim_gpu_util: float = 0.5
    sim_cpu: str | None = None
    sim_cpu_tdp: float | None = None
    sim_cpu_util: float = 0.5
    rapl_root: str = "/sys/class/powercap"
    verbose: int = 1
    ignore_errors: bool = True
    decimal_precision: int = 4
    monitor_metric: str | None = None
    distributed: bool | None = None
    distributed_timeout_s: float = 60.0
    live_intensity: bool | str | None = None
    electricitymaps_token: str | None = field(default=None, repr=False)
    electricitymaps_zone: str | None = None
    electricitymaps_lat_lon: tuple[float, float] | None = None
    electricitymaps_base_url: str = ELECTRICITYMAPS_URL
    energidataservice_base_url: str = ENERGIDATASERVICE_URL
    gb_base_url: str = GB_CARBON_INTENSITY_URL
    gb_region: int | None = None
    gb_postcode: str | None = None
    cloud_region: str | None = None
    ip_geolocation: bool = False
    ip_geolocation_url: str = IP_GEOLOCATION_URL
    budget_g: float | str | None = None
    budget_kwh: float | str | None = None
    budget_s: float | str | None = None
    budget_policy: str | None = None
    stop_and_confirm: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate()

    # -- validation -------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.epochs is not None:
            if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
                raise ConfigError(f"epochs must be an integer >= 1 (or None), got {self.epochs!r}")
        if not _is_int(self.epochs_before_pred) or self.epochs_before_pred < 0:
            raise ConfigError(
                f"epochs_before_pred must be an integer >= 0 (0 = no prediction), "
                f"got {self.epochs_before_pred!r}"
            )
        if not _is_int(self.monitor_epochs) or (
            self.monitor_epochs != -1 and self.monitor_epochs < 1
        ):
            raise ConfigError(
                f"monitor_epochs must be -1 (all) or an integer >= 1, got {self.monitor_epochs!r}"
            )
        if self.monitor_epochs != -1 and self.monitor_epochs < self.epochs_before_pred:
            raise ConfigError(
                f"monitor_epochs={self.monitor_epochs} is smaller than epochs_before_pred="
                f"{self.epochs_before_pred}: a prediction needs that many monitored epochs"
            )
        if self.epochs is not None and self.epochs_before_pred > self.epochs:
            raise ConfigError(
                f"epochs_before_pred={self.epochs_before_pred} exceeds epochs={self.epochs}; "
                "lower it or set epochs_before_pred=0 for no prediction"
            )
        if self.total_steps is not None and (not _is_int(self.total_steps) or self.total_steps < 1):
            raise ConfigError(f"total_steps must be an integer >= 1, got {self.total_steps!r}")
        if self.components not in _COMPONENTS:
            raise ConfigError(f"components must be one of {_COMPONENTS}, got {self.components!r}")
        pue_setting = "pue"
        if self.pue is None:
            env_pue = os.environ.get(ENV_PUE)
            if env_pue is not None:
                pue_setting = f"pue (environment variable {ENV_PUE}={env_pue!r})"
            self.pue = env_pue if env_pue is not None else 1.0
        self.pue = _positive_float(pue_setting, self.pue)  # type: ignore[assignment]
        if self.pue < 1.0:
            raise ConfigError(
                f"{pue_setting} must be >= 1.0 (the ratio of facility energy to IT energy), "
                f"got {self.pue}"
            )
        if self.intensity_g_per_kwh is not None:
            value = self.intensity_g_per_kwh
            try:
                if isinstance(value, bool):
                    raise TypeError
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"intensity_g_per_kwh must be a number of gCO2eq/kWh, got {value!r}"
                ) from None
            if not math.isfinite(number) or number < 0:
                raise ConfigError(f"intensity_g_per_kwh must be finite and >= 0, got {value!r}")
            self.intensity_g_per_kwh = number
        if self.zone is not None:
            self.zone = normalise_zone(self.zone)
        self._validate_intensity_sources()
        if self.offline is None:
            env = _env_flag(ENV_OFFLINE)
            if env is not None:
                self.offline = env
            elif self.live_intensity:
                self.offline = False
            elif self.ip_geolocation:
                # the network for the one lookup, not for live values (ask with live_intensity)
                self.offline = False
                if self.live_intensity is None:
                    self.live_intensity = False
            else:
                self.offline = True
        elif not isinstance(self.offline, bool):
            raise ConfigError(f"offline must be True, False or None, got {self.offline!r}")
        self.interval_s = _positive_float("interval_s", self.interval_s)  # type: ignore[assignment]
        if self.interval_s < 0.01 or self.interval_s > 3600:
            raise ConfigError(f"interval_s must be between 0.01 and 3600 s, got {self.interval_s}")
        if self.counter_interval_s is not None:
            self.counter_interval_s = _positive_float(  # type: ignore[assignment]
                "counter_interval_s", self.counter_interval_s
            )
            if not 0.05 <= self.counter_interval_s <= 3600:
                raise ConfigError(
                    "counter_interval_s must be None (adapts to the epochs) or between 0.05 and "
                    f"3600 s, got {self.counter_interval_s}"
                )
        if self.distributed is not None and not isinstance(self.distributed, bool):
            raise ConfigError(
                f"distributed must be None (automatic), True or False, got {self.distributed!r}"
            )
        self.distributed_timeout_s = _positive_float(  # type: ignore[assignment]
            "distributed_timeout_s", self.distributed_timeout_s
        )
        if self.gpu_method not in ("auto", "sampled"):
            raise ConfigError(f"gpu_method must be 'auto' or 'sampled', got {self.gpu_method!r}")
        if (self.sim_gpu is None) != (self.sim_gpu_watts is None):
            raise ConfigError("sim_gpu and sim_gpu_watts must be given together (name and watts)")
        if self.sim_gpu_watts is not None:
            self.sim_gpu_watts = _positive_float("sim_gpu_watts", self.sim_gpu_watts)
        if (self.sim_cpu is None) != (self.sim_cpu_tdp is None):
            raise ConfigError("sim_cpu and sim_cpu_tdp must be given together (name and watts)")
        if self.sim_cpu_tdp is not None:
            self.sim_cpu_tdp = _positive_float("sim_cpu_tdp", self.sim_cpu_tdp)
        for name in ("sim_gpu_util", "sim_cpu_util"):
            util = getattr(self, name)
            if isinstance(util, bool) or not isinstance(util, (int, float)) or not 0 < util <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {util!r}")
        if self.gpu_ids is not None:
            if isinstance(self.gpu_ids, (str, int)):
                self.gpu_ids = [self.gpu_ids]
            ids = list(self.gpu_ids)
            for gpu in ids:
                if (
                    isinstance(gpu, bool)
                    or not isinstance(gpu, (int, str))
                    or (isinstance(gpu, int) and gpu < 0)
                ):
                    raise ConfigError(
                        f"gpu_ids must hold NVML indices (int >= 0) or UUIDs (str), got {gpu!r}"
                    )
            if len(set(map(str, ids))) != len(ids):
                raise ConfigError(f"gpu_ids lists a GPU twice: {ids!r}")
            self.gpu_ids = ids
        if self.components == "cpu" and self.gpu_ids:
            raise ConfigError("components='cpu' contradicts gpu_ids: drop one of them")
        if self.components == "cpu" and self.sim_gpu is not None:
            raise ConfigError("components='cpu' contradicts sim_gpu: drop one of them")
        if self.components == "gpu" and self.sim_cpu is not None:
            raise ConfigError("components='gpu' contradicts sim_cpu: drop one of them")
        if self.log_dir is not None:
            if not isinstance(self.log_dir, (str, os.PathLike)):
                raise ConfigError(
                    f"log_dir must be a folder path (str or os.PathLike) or None, "
                    f"got {self.log_dir!r}"
                )
            self.log_dir = os.fspath(self.log_dir)
            check_writable_dir(self.log_dir)
        if not _is_int(self.verbose) or self.verbose not in (0, 1, 2):
            raise ConfigError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        self._validate_budget()
        if not isinstance(self.log_file_prefix, str):
            raise ConfigError(
                f"log_file_prefix must be a string ('' for none), got {self.log_file_prefix!r}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.\-]*", self.log_file_prefix):
            raise ConfigError(
                "log_file_prefix may hold letters, digits, '.', '_' and '-' only "
                f"(it becomes part of a file name), got {self.log_file_prefix!r}"
            )

        if self.run_name is not None and not isinstance(self.run_name, str):
            raise ConfigError(f"run_name must be a string or None, got {self.run_name!r}")
        if not isinstance(self.rapl_root, (str, os.PathLike)) or not os.fspath(self.rapl_root):
            raise ConfigError(
                f"rapl_root must be a folder path (default /sys/class/powercap), "
                f"got {self.rapl_root!r}"
            )
        if not isinstance(self.ignore_errors, bool):
            raise ConfigError(f"ignore_errors must be True or False, got {self.ignore_errors!r}")
        if not _is_int(self.decimal_precision) or not 1 <= self.decimal_precision <= 17:
            raise ConfigError(
                "decimal_precision must be an integer from 1 to 17 (significant digits in "
                f"reports), got {self.decimal_precision!r}"
            )
        if self.monitor_metric is not None and (
            not isinstance(self.monitor_metric, str) or not self.monitor_metric
        ):
            raise ConfigError(
                f"monitor_metric must be a metric name such as 'val/dice', or None, "
                f"got {self.monitor_metric!r}"
            )
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            raise ConfigError(
                f"extra must be a dict with string keys (free-form notes for the run log), "
                f"got {self.extra!r}"
            )

    def _validate_intensity_sources(self) -> None:
        """Live providers, location and the token: shapes only (zones are checked later)."""
        live = self.live_intensity
        if not (live is None or isinstance(live, bool) or live in LIVE_PROVIDERS):
            raise ConfigError(
                f"live_intensity must be None, True, False or one of {LIVE_PROVIDERS}, got {live!r}"
            )
        if self.electricitymaps_token is None:
            env_token = os.environ.get(ENV_ELECTRICITYMAPS_TOKEN, "").strip()
            if env_token:
                _check_token(env_token, f"environment variable {ENV_ELECTRICITYMAPS_TOKEN}")
                self.electricitymaps_token = env_token
        else:
            _check_token(self.electricitymaps_token, "electricitymaps_token")
        if live == "electricitymaps" and not self.electricitymaps_token:
            raise ConfigError(
                "live_intensity='electricitymaps' needs a token: set electricitymaps_token or "
                f"the environment variable {ENV_ELECTRICITYMAPS_TOKEN}"
            )
        if self.electricitymaps_zone is not None:
            self.electricitymaps_zone = normalise_zone(self.electricitymaps_zone)
        if self.electricitymaps_lat_lon is not None:
            try:
                lat, lon = (float(v) for v in self.electricitymaps_lat_lon)
            except (TypeError, ValueError):
                raise ConfigError(
                    "electricitymaps_lat_lon must be (latitude, longitude) in degrees, "
                    f"got {self.electricitymaps_lat_lon!r}"
                ) from None
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ConfigError(
                    f"electricitymaps_lat_lon=({lat}, {lon}) is outside -90..90, -180..180"
                )
            if self.electricitymaps_zone is not None:
                raise ConfigError("give electricitymaps_zone or electricitymaps_lat_lon, not both")
            self.electricitymaps_lat_lon = (lat, lon)
        for name in (
            "electricitymaps_base_url",
            "energidataservice_base_url",
            "gb_base_url",
            "ip_geolocation_url",
        ):
            setattr(self, name, _check_url(name, getattr(self, name)))
        if self.gb_region is not None and self.gb_postcode is not None:
            raise ConfigError("give gb_region or gb_postcode, not both")
        if self.gb_region is not None and (
            isinstance(self.gb_region, bool)
            or not isinstance(self.gb_region, int)
            or not 1 <= self.gb_region <= 17
        ):
            raise ConfigError(
                "gb_region must be a GB Carbon Intensity API region id 1-17, "
                f"got {self.gb_region!r}"
            )
        if self.gb_postcode is not None:
            if not isinstance(self.gb_postcode, str) or not re.fullmatch(
                r"[A-Za-z]{1,2}[0-9][A-Za-z0-9]?( ?[0-9][A-Za-z]{2})?", self.gb_postcode.strip()
            ):
                raise ConfigError(
                    f"gb_postcode={self.gb_postcode!r} is not a UK postcode: give the outward "
                    "code, e.g. 'RG10' or 'SW1A' (only that part is ever sent)"
                )
        if self.gb_region is not None or self.gb_postcode is not None:
            if self.zone is None:
                self.zone = "GB"
            elif self.zone != "GB":
                raise ConfigError(
                    f"gb_region/gb_postcode are for zone 'GB', but zone={self.zone!r}: drop one"
                )
        if self.cloud_region is not None and (
            not isinstance(self.cloud_region, str) or not self.cloud_region.strip()
        ):
            raise ConfigError(
                f"cloud_region must be a region name such as 'eu-west-1', got {self.cloud_region!r}"
            )
        if not isinstance(self.ip_geolocation, bool):
            raise ConfigError(f"ip_geolocation must be True or False, got {self.ip_geolocation!r}")

    def _validate_budget(self) -> None:
        from carbon_callbacks.core.budget import BudgetError, normalise_policy, parse_limit

        try:
            for name in ("budget_g", "budget_kwh", "budget_s"):
                if getattr(self, name) is not None:
                    setattr(self, name, parse_limit(name, getattr(self, name)))
            has_limit = any(
                getattr(self, n) is not None for n in ("budget_g", "budget_kwh", "budget_s")
            )
            if self.budget_policy is not None:
                self.budget_policy = normalise_policy(self.budget_policy)
                if not has_limit:
                    raise BudgetError(
                        f"budget_policy={self.budget_policy!r} has no limit to act on: set "
                        "budget_g (gCO2eq), budget_kwh (kWh) and/or budget_s (seconds)"
                    )
            elif has_limit:
                self.budget_policy = "warn"
        except BudgetError as exc:
            raise ConfigError(str(exc)) from None
        if has_limit and self.monitor_epochs != -1:
            raise ConfigError(
                f"a budget needs every epoch measured, but monitor_epochs={self.monitor_epochs} "
                "stops measuring after that many; use monitor_epochs=-1 with a budget"
            )
        if self.budget_policy == "stop-when-predicted-over" and self.epochs_before_pred == 0:
            raise ConfigError(
                "budget_policy='stop-when-predicted-over' acts on predictions, but "
                "epochs_before_pred=0 turns them off; set epochs_before_pred >= 1"
            )
        if not isinstance(self.stop_and_confirm, bool):
            raise ConfigError(
                f"stop_and_confirm must be True or False, got {self.stop_and_confirm!r}"
            )
        if self.stop_and_confirm:
            if self.epochs_before_pred == 0:
                raise ConfigError(
                    "stop_and_confirm asks after the first prediction, but epochs_before_pred=0 "
                    "turns predictions off; set epochs_before_pred >= 1"
                )
            if not stdin_is_interactive():
                raise ConfigError(
                    "stop_and_confirm=True asks 'Continue training (y/n)?' on the terminal after "
                    "the first prediction, but stdin is not an interactive terminal (a batch "
                    "job, a pipe or CI), so nobody could answer and training would hang: drop "
                    "stop_and_confirm, or set a budget with budget_policy="
                    "'stop-when-predicted-over', which decides without asking"
                )

    # -- helpers ----------------------------------------------------------------------------
    @property
    def measures_gpu(self) -> bool:
        """True when GPUs are to be measured."""
        return self.components in ("all", "gpu")

    @property
    def measures_cpu(self) -> bool:
        """True when CPU and DRAM are to be measured."""
        return self.components in ("all", "cpu")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, as stored in the run log's header.

        Secrets are redacted: the value of any setting, or any key in ``extra`` (at any depth),
        whose name looks like a credential (:data:`SECRET_NAME`: ``token``, ``api_key``,
        ``password``...) is replaced by :data:`REDACTED`. The run log, reports and ``repr``
        show settings only through this method.
        """
        out = _redact(asdict(self))
        out["gpu_ids"] = list(self.gpu_ids) if self.gpu_ids is not None else None
        return out

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"{type(self).__name__}({settings})"

    @classmethod
    def from_kwargs(cls, config: CarbonConfig | None = None, **kwargs: Any) -> CarbonConfig:
        """Build from keyword arguments; unknown names are refused with the valid ones listed.

        ``country`` is accepted as an alias of ``zone``.
        """
        if config is not None:
            if kwargs:
                raise ConfigError(
                    "pass either config=CarbonConfig(...) or keyword settings, not both"
                )
            return config
        if "country" in kwargs:
            if kwargs.get("zone") is not None:
                raise ConfigError("country and zone are the same setting: give one")
            kwargs["zone"] = kwargs.pop("country")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {unknown}; valid settings are: {', '.join(sorted(valid))}"
            )
        return cls(**kwargs)


def stdin_is_interactive() -> bool:
    """True where a question on stdin can be answered: a terminal, or a Jupyter kernel.

    Only rank 0 asks under DDP, so other ranks count as interactive here.
    """
    from carbon_callbacks.core.distributed import rank

    if rank() != 0:
        return True
    ipython = sys.modules.get("IPython")
    if ipython is not None:  # running inside a Jupyter kernel (not merely ipykernel imported)
        shell = getattr(ipython, "get_ipython", lambda: None)()
        if shell is not None and getattr(shell, "kernel", None) is not None:
            return True
    stdin = sys.stdin
    try:
        return stdin is not None and not stdin.closed and bool(stdin.isatty())
    except (AttributeError, ValueError, OSError):
        return False


#: Names of settings (and keys of ``extra``) whose values are credentials, never shown.
SECRET_NAME = re.compile(
    r"token|secret|passw|api[-_ ]?key|credential|bearer|authori[sz]ation", re.IGNORECASE
)
#: What a redacted value reads as.
REDACTED = "<redacted>"


def _redact(value: Any) -> Any:
    """``value`` with the values of credential-like keys replaced (dicts and lists, any depth)."""
    if isinstance(value, dict):
        return {
            key: (
                REDACTED
                if value[key] is not None and SECRET_NAME.search(str(key))
                else _redact(value[key])
            )
            for key in value
        }
    if isinstance(value, (list, tuple)):
        return [_redact(item) for item in value]
    return value


def _is_int(value: Any) -> bool:
    """An int that is not a bool (``True`` is an int in Python, never a count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def normalise_zone(zone: str) -> str:
    """Upper-case and check the shape of a zone code (``"us-ca"`` -> ``"US-CA"``).

    Whether the zone is known is checked by the intensity resolver, which knows the tables.
    """
    if not isinstance(zone, str) or not zone.strip():
        raise ConfigError(f"zone must be a code such as 'DK', 'US-CA' or 'DK1', got {zone!r}")
    code = zone.strip().upper().replace("_", "-")
    if not re.fullmatch(r"[A-Z0-9]{2,8}(-[A-Z0-9]{1,8})*", code):
        raise ConfigError(f"zone must be a code such as 'DK', 'US-CA' or 'DK1', got {zone!r}")
    return code


def _check_token(token: Any, where: str) -> None:
    """Refuse a token that cannot be one (the message never repeats the token)."""
    if not isinstance(token, str):
        raise ConfigError(f"{where} must be text, got a {type(token).__name__}")
    if not 8 <= len(token) <= 512:
        raise ConfigError(
            f"{where} does not look like an API token ({len(token)} characters; expected "
            "8 to 512): copy it again from your Electricity Maps account"
        )
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise ConfigError(
            f"{where} holds spaces, quotes or other characters a token cannot have (a stray "
            "newline or 'Bearer ' prefix?): give the bare token"
        )


def _check_url(name: str, url: Any) -> str:
    """An https URL, or http to a loopback host (tests); no credentials in it."""
    from urllib.parse import urlsplit

    if not isinstance(url, str):
        raise ConfigError(f"{name} must be a URL, got {url!r}")
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{name} must be an https:// URL, got {url!r}")
    if parts.scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise ConfigError(
            f"{name}={url!r}: plain http is accepted only for a loopback host; use https://"
        )
    if parts.username or parts.password:
        raise ConfigError(f"{name} must not hold credentials; use the token setting instead")
    return url.strip().rstrip("/")


def check_writable_dir(path: str) -> None:
    """Create ``path`` if needed and prove it is writable, else raise :class:`ConfigError`."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"log_dir {str(directory)!r} cannot be created ({exc.strerror or exc}); "
            "choose a writable folder or pass log_dir=None to write no run log"
        ) from None
    try:  # os.access() says yes to root even on read-only mounts: really try a write
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".carbon-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"log_dir {str(directory)!r} is not writable ({exc.strerror or exc}); "
            "choose a writable folder or pass log_dir=None to write no run log"
        ) from None
