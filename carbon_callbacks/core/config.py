"""One validated settings value shared by the tracker and every integration.

Bad settings are refused here, at construction, with a message that says what to do; nothing
about a setting is discovered to be wrong after an epoch has run. Validation has no side
effects; :func:`prepare_outputs` makes the log folder ready when the tracker starts. The
argument names follow carbontracker's where they overlap (``epochs``, ``epochs_before_pred``,
``monitor_epochs``, ``log_dir``, ``components``, ``sim_cpu``...), so its users switch by
changing an import.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carbon_callbacks.core.events import EventLog

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
_BUDGETS = ("budget_g", "budget_kwh", "budget_s")


class ConfigError(ValueError):
    """A setting is invalid. The message names the setting and says what would be valid."""


@dataclass(frozen=True)
class Endpoints:
    """Where the runtime reaches outside the process; not a user setting.

    The live providers' and the IP lookup's addresses (https; plain http only to a loopback
    host) and the powercap sysfs root that RAPL counters are read from. Tests point them at
    local servers and temporary folders with ``_endpoints=Endpoints(...)``, or a dict of these
    fields, passed to :class:`CarbonConfig`, the tracker or a callback.
    """

    energidataservice_base_url: str = ENERGIDATASERVICE_URL
    gb_base_url: str = GB_CARBON_INTENSITY_URL
    electricitymaps_base_url: str = ELECTRICITYMAPS_URL
    ip_geolocation_url: str = IP_GEOLOCATION_URL
    rapl_root: str = "/sys/class/powercap"

    def __post_init__(self) -> None:
        for item in fields(self):
            if item.name != "rapl_root":
                object.__setattr__(self, item.name, _check_url(item.name, getattr(self, item.name)))
        root = self.rapl_root
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise ConfigError(
                f"rapl_root must be a folder path (default /sys/class/powercap), got {root!r}"
            )
        object.__setattr__(self, "rapl_root", os.fspath(root))


#: Former settings that are endpoints now: still accepted by ``from_kwargs``, with a warning.
_MOVED_TO_ENDPOINTS = tuple(f.name for f in fields(Endpoints))
#: carbontracker's settings that have no effect here: accepted by ``from_kwargs``, with a warning.
_WITHOUT_EFFECT = {
    "ignore_errors": "this package never exits on an error: a fault degrades with a warning "
    "and training continues",
    "devices_by_pid": "the GPUs measured are those this process uses: CUDA_VISIBLE_DEVICES, "
    "the rank's own GPU under DDP, or gpu_ids",
    "interpretable": "the reports always give the figures with their equivalents",
}
#: Values of those settings that are what this package does anyway (no warning).
_SAME_HERE = {"interpretable": True}
#: Other names of settings: ``country``, and carbontracker's ``update_interval`` and ``api_keys``.
_ALIASES = (
    ("country", "zone"),
    ("update_interval", "interval_s"),
    ("api_keys", "electricitymaps_token"),
)


@dataclass(frozen=True)
class CarbonConfig:
    """Settings for one tracked run: a frozen value, validated at construction.

    Validation has no side effects: it creates no folder, opens no file or socket and starts
    no thread. Environment variables are read in one place, :func:`_read_environment`, for the
    settings left at ``None``. What the run writes to is made ready by :func:`prepare_outputs`
    when the tracker starts.

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
        verbose: 0 silent, 1 prediction and final report, 2 also every epoch.
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
        gb_region / gb_postcode: a GB region id (1-17) or an outward postcode for the regional
            forecast of the GB Carbon Intensity API (imply ``zone="GB"``).
        cloud_region: a cloud region name (``"eu-west-1"``, ``"gcp:europe-west1"``) for the
            location when no zone is given; else read from environment variables.
        ip_geolocation: opt in to one IP geolocation lookup when no zone is known (allows the
            network for it unless offline is set, without turning live values on:
            ``live_intensity`` then defaults to False).
        budget_g / budget_kwh / budget_s: limits of the run in grams CO2eq, kWh (PUE included)
            and seconds of training; a number in that unit or a text with a unit
            (``"2.5 kg"``, ``"500 Wh"``, ``"90 min"``). Stored in the setting's unit.
        budget_policy: ``"warn"`` (the default when a limit is set), ``"stop-when-predicted-over"``
            or ``"stop-when-spent"`` (see :mod:`carbon_callbacks.core.budget`).
        stop_and_confirm: carbontracker's option: after the first prediction, ask
            "Continue training (y/n)?" on the terminal and stop on "n". Off by default; needs an
            interactive stdin, checked at ``start()`` (without one nothing is asked, with a
            warning).
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
    verbose: int = 1
    decimal_precision: int = 4
    monitor_metric: str | None = None
    distributed: bool | None = None
    distributed_timeout_s: float = 60.0
    live_intensity: bool | str | None = None
    electricitymaps_token: str | None = field(default=None, repr=False)
    electricitymaps_zone: str | None = None
    electricitymaps_lat_lon: tuple[float, float] | None = None
    gb_region: int | None = None
    gb_postcode: str | None = None
    cloud_region: str | None = None
    ip_geolocation: bool = False
    budget_g: float | str | None = None
    budget_kwh: float | str | None = None
    budget_s: float | str | None = None
    budget_policy: str | None = None
    stop_and_confirm: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    _endpoints: Endpoints = field(default_factory=Endpoints, repr=False)

    def __post_init__(self) -> None:
        values = _read_environment(
            {f.name: getattr(self, f.name) for f in fields(self)}, os.environ
        )
        for check in _CHECKS:
            check(values)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # -- helpers ----------------------------------------------------------------------------
    @property
    def endpoints(self) -> Endpoints:
        """The providers' addresses and the powercap root (:class:`Endpoints`)."""
        return self._endpoints

    @property
    def measures_gpu(self) -> bool:
        """True when GPUs are to be measured."""
        return self.components in ("all", "gpu")

    @property
    def measures_cpu(self) -> bool:
        """True when CPU and DRAM are to be measured."""
        return self.components in ("all", "cpu")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, as stored in the run log's header (endpoints left out).

        Secrets are redacted: the value of any setting, or any key in ``extra`` (at any depth),
        whose name looks like a credential (:data:`SECRET_NAME`: ``token``, ``api_key``,
        ``password``...) is replaced by :data:`REDACTED`. The run log, reports and ``repr``
        show settings only through this method.
        """
        out = _redact({k: v for k, v in asdict(self).items() if not k.startswith("_")})
        out["gpu_ids"] = list(self.gpu_ids) if self.gpu_ids is not None else None
        return out

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"{type(self).__name__}({settings})"

    @classmethod
    def from_kwargs(cls, config: CarbonConfig | None = None, **kwargs: Any) -> CarbonConfig:
        """Build from keyword arguments; unknown names are refused with the valid ones listed.

        ``country`` is accepted as another name of ``zone``, and carbontracker's
        ``update_interval`` of ``interval_s`` and ``api_keys={"electricitymaps": token}`` of
        ``electricitymaps_token``. carbontracker's ``ignore_errors``, ``devices_by_pid`` and
        ``interpretable=False``, which do nothing here, and the former endpoint settings (see
        :class:`Endpoints`) are accepted with one ``FutureWarning`` each.
        """
        if config is not None:
            if kwargs:
                raise ConfigError(
                    "pass either config=CarbonConfig(...) or keyword settings, not both"
                )
            return config
        kwargs = _retire(_aliases(kwargs))
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            public = sorted(n for n in valid if not n.startswith("_"))
            raise ConfigError(
                f"unknown setting(s) {unknown}; valid settings are: {', '.join(public)}"
            )
        return cls(**kwargs)


def _aliases(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the other names of settings (:data:`_ALIASES`) under the setting's own."""
    if "api_keys" in kwargs:
        kwargs["api_keys"] = _electricitymaps_key(kwargs["api_keys"])
    for alias, name in _ALIASES:
        if alias not in kwargs:
            continue
        value = kwargs.pop(alias)
        if kwargs.get(name) is not None and value is not None:
            raise ConfigError(f"{alias} and {name} are the same setting: give one")
        if value is not None:
            kwargs[name] = value
    return kwargs


def _electricitymaps_key(api_keys: Any) -> str | None:
    """The token in carbontracker's ``api_keys={"electricitymaps": token}`` (never shown)."""
    if api_keys is None:
        return None
    if not isinstance(api_keys, Mapping) or set(api_keys) != {"electricitymaps"}:
        keys = sorted(map(str, api_keys)) if isinstance(api_keys, Mapping) else None
        raise ConfigError(
            "api_keys must be {'electricitymaps': '<token>'} (carbontracker's form; only the "
            f"Electricity Maps token is used), got {keys if keys is not None else type(api_keys)}"
        )
    return api_keys["electricitymaps"]


def _retire(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without the settings that do nothing here or moved, each warned about once."""
    for name, why in _WITHOUT_EFFECT.items():
        if name in kwargs and kwargs.pop(name) is not _SAME_HERE.get(name, object()):
            warnings.warn(
                f"carbon_callbacks: {name} has no effect here ({why}); drop it",
                FutureWarning,
                stacklevel=4,
            )
    moved = {n: kwargs.pop(n) for n in _MOVED_TO_ENDPOINTS if n in kwargs}
    if moved:
        warnings.warn(
            f"carbon_callbacks: {', '.join(moved)} is no longer a setting: the services' "
            "addresses and the powercap root are fixed; it is honoured for now but will be "
            "removed, drop it",
            FutureWarning,
            stacklevel=4,
        )
        endpoints = _endpoints_of(kwargs.get("_endpoints", {}))
        kwargs["_endpoints"] = dataclasses.replace(endpoints, **moved)
    return kwargs


def _endpoints_of(value: Any) -> Endpoints:
    """An :class:`Endpoints` from one, or from a dict of its fields (JSON-friendly)."""
    if isinstance(value, Endpoints):
        return value
    names = {f.name for f in fields(Endpoints)}
    if not isinstance(value, Mapping) or not set(value) <= names:
        raise ConfigError(f"_endpoints must be an Endpoints or a dict of {sorted(names)}")
    return Endpoints(**value)


# -- the environment --------------------------------------------------------------------------
def _read_environment(values: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """``values`` with the settings left at ``None`` taken from ``env`` where it sets them.

    The only place settings are read from environment variables (``$CARBON_CALLBACKS_PUE``,
    ``$CARBON_CALLBACKS_OFFLINE``, ``$CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN``); each value is
    checked here, so that its message names the variable. The zone and intensity variables are
    read by the intensity resolver, which knows the tables.
    """
    if values["pue"] is None:
        raw = env.get(ENV_PUE)
        values["pue"] = (
            1.0 if raw is None else _pue(f"pue (environment variable {ENV_PUE}={raw!r})", raw)
        )
    if values["offline"] is None:
        values["offline"] = _env_flag(env, ENV_OFFLINE)
    if values["electricitymaps_token"] is None:
        token = env.get(ENV_ELECTRICITYMAPS_TOKEN, "").strip()
        if token:
            _check_token(token, f"environment variable {ENV_ELECTRICITYMAPS_TOKEN}")
            values["electricitymaps_token"] = token
    return values


def _env_flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r}: use 1/0, true/false, yes/no")


# -- validation: pure checks over the values, in order ----------------------------------------
def _check_counts(v: dict[str, Any]) -> None:
    """Epochs, the prediction's start, monitored epochs and steps."""
    epochs = v["epochs"]
    if epochs is not None and (not _is_int(epochs) or epochs < 1):
        raise ConfigError(f"epochs must be an integer >= 1 (or None), got {epochs!r}")
    before = v["epochs_before_pred"]
    if not _is_int(before) or before < 0:
        raise ConfigError(
            f"epochs_before_pred must be an integer >= 0 (0 = no prediction), got {before!r}"
        )
    monitor = v["monitor_epochs"]
    if not _is_int(monitor) or (monitor != -1 and monitor < 1):
        raise ConfigError(f"monitor_epochs must be -1 (all) or an integer >= 1, got {monitor!r}")
    if monitor != -1 and monitor < before:
        raise ConfigError(
            f"monitor_epochs={monitor} is smaller than epochs_before_pred={before}: a "
            "prediction needs that many monitored epochs"
        )
    if epochs is not None and before > epochs:
        raise ConfigError(
            f"epochs_before_pred={before} exceeds epochs={epochs}; "
            "lower it or set epochs_before_pred=0 for no prediction"
        )
    steps = v["total_steps"]
    if steps is not None and (not _is_int(steps) or steps < 1):
        raise ConfigError(f"total_steps must be an integer >= 1, got {steps!r}")


def _check_energy(v: dict[str, Any]) -> None:
    """Components, PUE, a stated intensity and the zone's shape."""
    if v["components"] not in _COMPONENTS:
        raise ConfigError(f"components must be one of {_COMPONENTS}, got {v['components']!r}")
    v["pue"] = _pue("pue", v["pue"])
    value = v["intensity_g_per_kwh"]
    if value is not None:
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
        v["intensity_g_per_kwh"] = number
    if v["zone"] is not None:
        v["zone"] = normalise_zone(v["zone"])


def _check_electricitymaps(v: dict[str, Any]) -> None:
    """The live provider's name, the Electricity Maps token and where to ask it for."""
    live = v["live_intensity"]
    if not (live is None or isinstance(live, bool) or live in LIVE_PROVIDERS):
        raise ConfigError(
            f"live_intensity must be None, True, False or one of {LIVE_PROVIDERS}, got {live!r}"
        )
    if v["electricitymaps_token"] is not None:
        _check_token(v["electricitymaps_token"], "electricitymaps_token")
    if live == "electricitymaps" and not v["electricitymaps_token"]:
        raise ConfigError(
            "live_intensity='electricitymaps' needs a token: set electricitymaps_token or "
            f"the environment variable {ENV_ELECTRICITYMAPS_TOKEN}"
        )
    if v["electricitymaps_zone"] is not None:
        v["electricitymaps_zone"] = normalise_zone(v["electricitymaps_zone"])
    lat_lon = v["electricitymaps_lat_lon"]
    if lat_lon is not None:
        try:
            lat, lon = (float(x) for x in lat_lon)
        except (TypeError, ValueError):
            raise ConfigError(
                f"electricitymaps_lat_lon must be (latitude, longitude) in degrees, got {lat_lon!r}"
            ) from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ConfigError(
                f"electricitymaps_lat_lon=({lat}, {lon}) is outside -90..90, -180..180"
            )
        if v["electricitymaps_zone"] is not None:
            raise ConfigError("give electricitymaps_zone or electricitymaps_lat_lon, not both")
        v["electricitymaps_lat_lon"] = (lat, lon)


def _check_location(v: dict[str, Any]) -> None:
    """The GB region or postcode, the cloud region and IP geolocation."""
    region, postcode = v["gb_region"], v["gb_postcode"]
    if region is not None and postcode is not None:
        raise ConfigError("give gb_region or gb_postcode, not both")
    if region is not None and (not _is_int(region) or not 1 <= region <= 17):
        raise ConfigError(
            f"gb_region must be a GB Carbon Intensity API region id 1-17, got {region!r}"
        )
    if postcode is not None and (
        not isinstance(postcode, str)
        or not re.fullmatch(
            r"[A-Za-z]{1,2}[0-9][A-Za-z0-9]?( ?[0-9][A-Za-z]{2})?", postcode.strip()
        )
    ):
        raise ConfigError(
            f"gb_postcode={postcode!r} is not a UK postcode: give the outward code, e.g. 'RG10' "
            "or 'SW1A' (only that part is ever sent)"
        )
    if region is not None or postcode is not None:
        if v["zone"] is None:
            v["zone"] = "GB"
        elif v["zone"] != "GB":
            raise ConfigError(
                f"gb_region/gb_postcode are for zone 'GB', but zone={v['zone']!r}: drop one"
            )
    cloud = v["cloud_region"]
    if cloud is not None and (not isinstance(cloud, str) or not cloud.strip()):
        raise ConfigError(f"cloud_region must be a region name such as 'eu-west-1', got {cloud!r}")
    if not isinstance(v["ip_geolocation"], bool):
        raise ConfigError(f"ip_geolocation must be True or False, got {v['ip_geolocation']!r}")


def _check_network(v: dict[str, Any]) -> None:
    """``offline``; when unset, the network is allowed only if a setting asks for it."""
    offline = v["offline"]
    if offline is None:
        if v["live_intensity"]:
            offline = False
        elif v["ip_geolocation"]:
            # the network for the one lookup, not for live values (ask with live_intensity)
            offline = False
            if v["live_intensity"] is None:
                v["live_intensity"] = False
        else:
            offline = True
    elif not isinstance(offline, bool):
        raise ConfigError(f"offline must be True, False or None, got {offline!r}")
    v["offline"] = offline
    v["_endpoints"] = _endpoints_of(v["_endpoints"])


def _check_meter(v: dict[str, Any]) -> None:
    """Sampling intervals, the GPU method and the ranks' exchange."""
    v["interval_s"] = _positive_float("interval_s", v["interval_s"])
    if not 0.01 <= v["interval_s"] <= 3600:
        raise ConfigError(f"interval_s must be between 0.01 and 3600 s, got {v['interval_s']}")
    if v["counter_interval_s"] is not None:
        v["counter_interval_s"] = _positive_float("counter_interval_s", v["counter_interval_s"])
        if not 0.05 <= v["counter_interval_s"] <= 3600:
            raise ConfigError(
                "counter_interval_s must be None (adapts to the epochs) or between 0.05 and "
                f"3600 s, got {v['counter_interval_s']}"
            )
    if v["distributed"] is not None and not isinstance(v["distributed"], bool):
        raise ConfigError(
            f"distributed must be None (automatic), True or False, got {v['distributed']!r}"
        )
    v["distributed_timeout_s"] = _positive_float(
        "distributed_timeout_s", v["distributed_timeout_s"]
    )
    if v["gpu_method"] not in ("auto", "sampled"):
        raise ConfigError(f"gpu_method must be 'auto' or 'sampled', got {v['gpu_method']!r}")


def _check_devices(v: dict[str, Any]) -> None:
    """Stated (simulated) devices, GPU ids and their agreement with ``components``."""
    for kind, watts in (("gpu", "sim_gpu_watts"), ("cpu", "sim_cpu_tdp")):
        if (v[f"sim_{kind}"] is None) != (v[watts] is None):
            raise ConfigError(f"sim_{kind} and {watts} must be given together (name and watts)")
        if v[watts] is not None:
            v[watts] = _positive_float(watts, v[watts])
    for name in ("sim_gpu_util", "sim_cpu_util"):
        util = v[name]
        if isinstance(util, bool) or not isinstance(util, (int, float)) or not 0 < util <= 1:
            raise ConfigError(f"{name} must be in (0, 1], got {util!r}")
    if v["gpu_ids"] is not None:
        ids = [v["gpu_ids"]] if isinstance(v["gpu_ids"], (str, int)) else list(v["gpu_ids"])
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
        v["gpu_ids"] = ids
    for components, other in (("cpu", "gpu_ids"), ("cpu", "sim_gpu"), ("gpu", "sim_cpu")):
        if v["components"] == components and v[other]:
            raise ConfigError(f"components={components!r} contradicts {other}: drop one of them")


def _check_outputs(v: dict[str, Any]) -> None:
    """The run log's folder and name, the console and the notes (shapes only: no disk)."""
    log_dir = v["log_dir"]
    if log_dir is not None:
        if not isinstance(log_dir, (str, os.PathLike)):
            raise ConfigError(
                f"log_dir must be a folder path (str or os.PathLike) or None, got {log_dir!r}"
            )
        v["log_dir"] = os.fspath(log_dir)
    if not _is_int(v["verbose"]) or v["verbose"] not in (0, 1, 2):
        raise ConfigError(f"verbose must be 0, 1 or 2, got {v['verbose']!r}")
    prefix = v["log_file_prefix"]
    if not isinstance(prefix, str):
        raise ConfigError(f"log_file_prefix must be a string ('' for none), got {prefix!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]*", prefix):
        raise ConfigError(
            "log_file_prefix may hold letters, digits, '.', '_' and '-' only "
            f"(it becomes part of a file name), got {prefix!r}"
        )
    if v["run_name"] is not None and not isinstance(v["run_name"], str):
        raise ConfigError(f"run_name must be a string or None, got {v['run_name']!r}")
    digits = v["decimal_precision"]
    if not _is_int(digits) or not 1 <= digits <= 17:
        raise ConfigError(
            "decimal_precision must be an integer from 1 to 17 (significant digits in "
            f"reports), got {digits!r}"
        )
    metric = v["monitor_metric"]
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError(
            f"monitor_metric must be a metric name such as 'val/dice', or None, got {metric!r}"
        )
    extra = v["extra"]
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise ConfigError(
            "extra must be a dict with string keys (free-form notes for the run log), "
            f"got {extra!r}"
        )


def _check_budget(v: dict[str, Any]) -> None:
    """Limits, the policy and ``stop_and_confirm`` (whose stdin is checked at start)."""
    from carbon_callbacks.core.budget import BudgetError, normalise_policy, parse_limit

    try:
        for name in _BUDGETS:
            if v[name] is not None:
                v[name] = parse_limit(name, v[name])
        has_limit = any(v[name] is not None for name in _BUDGETS)
        if v["budget_policy"] is not None:
            v["budget_policy"] = normalise_policy(v["budget_policy"])
            if not has_limit:
                raise BudgetError(
                    f"budget_policy={v['budget_policy']!r} has no limit to act on: set "
                    "budget_g (gCO2eq), budget_kwh (kWh) and/or budget_s (seconds)"
                )
        elif has_limit:
            v["budget_policy"] = "warn"
    except BudgetError as exc:
        raise ConfigError(str(exc)) from None
    if has_limit and v["monitor_epochs"] != -1:
        raise ConfigError(
            f"a budget needs every epoch measured, but monitor_epochs={v['monitor_epochs']} "
            "stops measuring after that many; use monitor_epochs=-1 with a budget"
        )
    if v["budget_policy"] == "stop-when-predicted-over" and v["epochs_before_pred"] == 0:
        raise ConfigError(
            "budget_policy='stop-when-predicted-over' acts on predictions, but "
            "epochs_before_pred=0 turns them off; set epochs_before_pred >= 1"
        )
    if not isinstance(v["stop_and_confirm"], bool):
        raise ConfigError(f"stop_and_confirm must be True or False, got {v['stop_and_confirm']!r}")
    if v["stop_and_confirm"] and v["epochs_before_pred"] == 0:
        raise ConfigError(
            "stop_and_confirm asks after the first prediction, but epochs_before_pred=0 "
            "turns predictions off; set epochs_before_pred >= 1"
        )


_CHECKS = (
    _check_counts,
    _check_energy,
    _check_electricitymaps,
    _check_location,
    _check_network,
    _check_meter,
    _check_devices,
    _check_outputs,
    _check_budget,
)


# -- at start() -------------------------------------------------------------------------------
def prepare_outputs(config: CarbonConfig, events: EventLog) -> CarbonConfig:
    """Make ready what a starting run writes to and asks through; the settings it goes on with.

    Creates ``log_dir`` and proves it writable with a probe file (removed again), and checks
    that ``stop_and_confirm`` can be answered on stdin. Called by the tracker's ``start()``,
    never at construction. A failure never stops training: it is recorded in ``events`` with
    one warning, and the run goes on without a run log (``log_dir=None``) or without the
    question (``stop_and_confirm=False``).
    """
    changes: dict[str, Any] = {}
    if config.log_dir is not None:
        try:
            check_writable_dir(config.log_dir)
        except ConfigError as exc:
            events.record(
                "log_dir_unwritable", f"{exc}; the run continues without a run log", "config"
            )
            changes["log_dir"] = None
    if config.stop_and_confirm and not stdin_is_interactive():
        events.record(
            "confirm_impossible",
            "stop_and_confirm=True asks 'Continue training (y/n)?' on the terminal after the "
            "first prediction, but stdin is not an interactive terminal (a batch job, a pipe "
            "or CI), so nobody could answer: nothing will be asked. For an unattended stop, "
            "set a budget with budget_policy='stop-when-predicted-over'",
            "config",
        )
        changes["stop_and_confirm"] = False
    return dataclasses.replace(config, **changes) if changes else config


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
        import tempfile  # at start() only

        with tempfile.NamedTemporaryFile(dir=directory, prefix=".carbon-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"log_dir {str(directory)!r} is not writable ({exc.strerror or exc}); "
            "choose a writable folder or pass log_dir=None to write no run log"
        ) from None


def _pue(setting: str, value: Any) -> float:
    """A PUE: a finite number >= 1.0; ``setting`` names it in the message."""
    number = _positive_float(setting, value)
    if number < 1.0:
        raise ConfigError(
            f"{setting} must be >= 1.0 (the ratio of facility energy to IT energy), got {number}"
        )
    return number


def _positive_float(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):  # float(True) == 1.0: a flag where a number belongs
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return number


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
