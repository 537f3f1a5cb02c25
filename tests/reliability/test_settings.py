"""Bad input: every CarbonConfig setting, its validation and its message (the table in
docs/reliability.md is this table). Each refused value raises ConfigError at construction, for
the tracker and for the Lightning callback alike, with a message naming the setting, and leaves
no folder, file or thread behind and sends no request. Building creates nothing; start() does."""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import warnings
from pathlib import Path

import pytest

from carbon_callbacks.core.config import CarbonConfig, ConfigError, Endpoints
from carbon_callbacks.core.tracker import CarbonTracker

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"

#: setting -> (values accepted, [(value refused, regex the message matches), ...])
TABLE: dict[str, tuple[list, list[tuple[object, str]]]] = {
    "distributed": (
        [None, True, False],
        [("yes", r"distributed must be None \(automatic\), True or False")],
    ),
    "distributed_timeout_s": (
        [60.0, 5],
        [(0, r"distributed_timeout_s must be a finite number > 0")],
    ),
    "live_intensity": (
        [None, False],
        [("maybe", r"live_intensity must be None, True, False or one of")],
    ),
    "electricitymaps_token": (
        [None],
        [
            ("bad token with spaces", r"electricitymaps_token holds spaces"),
            ("", r"electricitymaps_token does not look like an API token"),
        ],
    ),
    "electricitymaps_zone": ([None, "DE"], [("??", r"zone must be a code such as")]),
    "electricitymaps_lat_lon": (
        [None, (55.7, 12.6)],
        [
            ((100, 0), r"is outside -90..90, -180..180"),
            ("x", r"electricitymaps_lat_lon must be \(latitude, longitude\)"),
        ],
    ),
    "gb_region": (
        [None, 1, 17],
        [(18, r"gb_region must be a GB Carbon Intensity API region id 1-17")],
    ),
    "gb_postcode": ([None, "RG10"], [("12345", r"is not a UK postcode")]),
    "cloud_region": ([None, "eu-west-1"], [("", r"cloud_region must be a region name")]),
    "ip_geolocation": ([False], [("yes", r"ip_geolocation must be True or False")]),
    "budget_g": (
        [None, 100, "2.5 kg"],
        [(-1, r"budget_g must be a finite number > 0"), ("5 kWh", r"mixes up units")],
    ),
    "budget_kwh": (
        [None, 1.5, "500 Wh"],
        [(-2, r"budget_kwh must be a finite number > 0"), ("3 g", r"mixes up units")],
    ),
    "budget_s": (
        [None, 3600, "90 min"],
        [(0, r"budget_s must be a finite number > 0"), ("abc", r"is not a number with a unit")],
    ),
    "budget_policy": ([None], [("never", r"budget_policy must be one of")]),
    "stop_and_confirm": ([False], [("yes", r"stop_and_confirm must be True or False")]),
    "epochs": (
        [None, 1, 500],
        [
            (0, r"epochs must be an integer >= 1"),
            (2.5, r"epochs must be an integer >= 1"),
            (True, r"epochs must be an integer >= 1"),
            ("10", r"epochs must be an integer >= 1"),
        ],
    ),
    "epochs_before_pred": (
        [0, 1],
        [
            (-1, r"epochs_before_pred must be an integer >= 0"),
            (1.5, r"epochs_before_pred must be an integer >= 0"),
            (True, r"epochs_before_pred must be an integer >= 0"),
        ],
    ),
    "monitor_epochs": (
        [-1, 1, 10],
        [
            (0, r"monitor_epochs must be -1 \(all\) or an integer >= 1"),
            (-2, r"monitor_epochs must be -1"),
            (True, r"monitor_epochs must be -1"),
        ],
    ),
    "total_steps": (
        [None, 1, 10_000],
        [
            (0, r"total_steps must be an integer >= 1"),
            (1.5, r"total_steps must be an integer >= 1"),
            (True, r"total_steps must be an integer >= 1"),
        ],
    ),
    "log_dir": (
        [None, "{tmp}/logs", "{tmp}/file/logs"],  # an unusable folder is found at start()
        [(5, r"log_dir must be a folder path \(str or os.PathLike\) or None")],
    ),
    "log_file_prefix": (
        ["", "unet_fold-0.", "A_b-1"],
        [
            ("../x", r"log_file_prefix may hold letters, digits"),
            ("a/b", r"log_file_prefix may hold letters, digits"),
            ("a b", r"log_file_prefix may hold letters, digits"),
            (None, r"log_file_prefix must be a string"),
        ],
    ),
    "run_name": (
        [None, "U-Net fold 0", "../../etc/passwd"],
        [
            (5, r"run_name must be a string or None"),
        ],
    ),
    "components": (
        ["all", "gpu", "cpu"],
        [
            ("tpu", r"components must be one of \('all', 'gpu', 'cpu'\)"),
            ("GPU", r"components must be one of"),
        ],
    ),
    "gpu_ids": (
        [None, [0], [0, 1], "GPU-1a2b", 3],
        [
            ([-1], r"gpu_ids must hold NVML indices \(int >= 0\) or UUIDs \(str\)"),
            ([True], r"gpu_ids must hold NVML indices"),
            ([1.5], r"gpu_ids must hold NVML indices"),
            ([0, 0], r"gpu_ids lists a GPU twice"),
        ],
    ),
    "pue": (
        [None, 1.0, 1.58, "1.2"],
        [
            (0.9, r"pue must be >= 1.0"),
            (0, r"pue must be a finite number > 0"),
            (float("nan"), r"pue must be a finite number > 0"),
            (float("inf"), r"pue must be a finite number > 0"),
            ("high", r"pue must be a number"),
            (True, r"pue must be a number"),
        ],
    ),
    "intensity_g_per_kwh": (
        [None, 0, 250, 56.2],
        [
            (-5, r"intensity_g_per_kwh must be finite and >= 0"),
            (float("nan"), r"intensity_g_per_kwh must be finite and >= 0"),
            ("lots", r"intensity_g_per_kwh must be a number of gCO2eq/kWh"),
            (True, r"intensity_g_per_kwh must be a number of gCO2eq/kWh"),
        ],
    ),
    "zone": (
        [None, "DK", "us-ca", "WORLD"],
        [
            ("", r"zone must be a code such as 'DK', 'US-CA' or 'DK1'"),
            ("D", r"zone must be a code such as"),
            ("DK/1", r"zone must be a code such as"),
            (
                "XX",
                r"zone='XX' is not a known zone",
            ),  # shape fine, not in the tables: the tracker refuses it
        ],
    ),
    "offline": (
        [None, True, False],
        [
            ("yes", r"offline must be True, False or None"),
            (1, r"offline must be True, False or None"),
        ],
    ),
    "interval_s": (
        [0.01, 1.0, 3600],
        [
            (0, r"interval_s must be a finite number > 0"),
            (0.001, r"interval_s must be between 0.01 and 3600 s"),
            (7200, r"interval_s must be between 0.01 and 3600 s"),
            (True, r"interval_s must be a number"),
        ],
    ),
    "counter_interval_s": (
        [None, 0.05, 0.1, 3600],
        [
            (0, r"counter_interval_s must be a finite number > 0"),
            (0.01, r"counter_interval_s must be None \(adapts to the epochs\) or between 0.05"),
            (7200, r"counter_interval_s must be None \(adapts to the epochs\) or between 0.05"),
            ("fast", r"counter_interval_s must be a number"),
        ],
    ),
    "gpu_method": (
        ["auto", "sampled"],
        [
            ("counter", r"gpu_method must be 'auto' or 'sampled'"),
        ],
    ),
    "sim_gpu": ([None], [("A100", r"sim_gpu and sim_gpu_watts must be given together")]),
    "sim_gpu_watts": (
        [None],
        [
            (300, r"sim_gpu and sim_gpu_watts must be given together"),
        ],
    ),
    "sim_gpu_util": (
        [0.5, 1, 0.01],
        [
            (0, r"sim_gpu_util must be in \(0, 1\]"),
            (1.5, r"sim_gpu_util must be in \(0, 1\]"),
            (True, r"sim_gpu_util must be in \(0, 1\]"),
        ],
    ),
    "sim_cpu": ([None], [("Xeon", r"sim_cpu and sim_cpu_tdp must be given together")]),
    "sim_cpu_tdp": ([None], [(150, r"sim_cpu and sim_cpu_tdp must be given together")]),
    "sim_cpu_util": (
        [0.5, 1],
        [
            (0, r"sim_cpu_util must be in \(0, 1\]"),
            ("half", r"sim_cpu_util must be in \(0, 1\]"),
        ],
    ),
    "verbose": (
        [0, 1, 2],
        [
            (3, r"verbose must be 0, 1 or 2"),
            (-1, r"verbose must be 0, 1 or 2"),
            (True, r"verbose must be 0, 1 or 2"),
        ],
    ),
    "decimal_precision": (
        [1, 4, 17],
        [
            (0, r"decimal_precision must be an integer from 1 to 17"),
            ("4", r"decimal_precision must be an integer from 1 to 17"),
            (18, r"decimal_precision must be an integer from 1 to 17"),
        ],
    ),
    "monitor_metric": (
        [None, "val/dice"],
        [
            ("", r"monitor_metric must be a metric name"),
            (3, r"monitor_metric must be a metric name"),
        ],
    ),
    "extra": (
        [{}, {"fold": 0, "model": "unet"}],
        [
            ("fold0", r"extra must be a dict with string keys"),
            ({1: "a"}, r"extra must be a dict with string keys"),
        ],
    ),
}

#: Pairs refused only together (each value is fine alone).
CONTRADICTIONS = [
    ({"epochs": 3, "epochs_before_pred": 5}, r"epochs_before_pred=5 exceeds epochs=3"),
    ({"monitor_epochs": 1, "epochs_before_pred": 2}, r"monitor_epochs=1 is smaller than"),
    ({"components": "cpu", "gpu_ids": [0]}, r"components='cpu' contradicts gpu_ids"),
    ({"components": "cpu", "sim_gpu": "A", "sim_gpu_watts": 1}, r"contradicts sim_gpu"),
    ({"components": "gpu", "sim_cpu": "X", "sim_cpu_tdp": 1}, r"contradicts sim_cpu"),
    ({"sim_gpu": "A100", "sim_gpu_watts": -300}, r"sim_gpu_watts must be a finite number > 0"),
    ({"sim_cpu": "Xeon", "sim_cpu_tdp": 0}, r"sim_cpu_tdp must be a finite number > 0"),
]

#: Environment variables and what a bad value says.
ENVIRONMENT = [
    ("CARBON_CALLBACKS_PUE", "high", r"environment variable CARBON_CALLBACKS_PUE='high'"),
    ("CARBON_CALLBACKS_PUE", "0.5", r"environment variable CARBON_CALLBACKS_PUE='0.5'"),
    ("CARBON_CALLBACKS_OFFLINE", "maybe", r"CARBON_CALLBACKS_OFFLINE='maybe': use 1/0"),
    ("CARBON_CALLBACKS_ZONE", "XX", r"CARBON_CALLBACKS_ZONE='XX' is not a known zone"),
    ("CARBON_CALLBACKS_INTENSITY_G_PER_KWH", "-3", r"CARBON_CALLBACKS_INTENSITY_G_PER_KWH='-3'"),
]


def _fill(value, tmp_path):
    if isinstance(value, str) and "{tmp}" in value:
        return value.replace("{tmp}", str(tmp_path))
    return value


def _cases(kind):
    for name, (good, bad) in TABLE.items():
        if kind == "good":
            for value in good:
                yield pytest.param(name, value, id=f"{name}={value!r}")
        else:
            for value, message in bad:
                yield pytest.param(name, value, message, id=f"{name}={value!r}")


@pytest.fixture
def leaves_nothing(tmp_path, monkeypatch):
    """Asserts, after the test, that the folder, the threads and the network are as before."""
    from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: F401 (imported)

    monkeypatch.chdir(tmp_path)  # a relative path created by mistake would land here
    (tmp_path / "file").write_text("")
    files = sorted(tmp_path.rglob("*"))
    threads = set(threading.enumerate())
    connects: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda sock, addr: connects.append(addr))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a))
    yield
    assert sorted(tmp_path.rglob("*")) == files
    assert set(threading.enumerate()) == threads
    assert connects == []


def test_the_table_covers_every_setting():
    public = {f.name for f in dataclasses.fields(CarbonConfig) if not f.name.startswith("_")}
    assert set(TABLE) == public


def test_the_documented_table_lists_every_setting():
    text = DOC.read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))
    assert documented == set(TABLE)


@pytest.mark.parametrize(("name", "value"), list(_cases("good")))
def test_accepted_and_nothing_created(name, value, tmp_path, leaves_nothing):
    config = CarbonConfig(**{"log_dir": str(tmp_path / "logs"), name: _fill(value, tmp_path)})
    assert config.to_dict()[name] is not None or value is None or name == "pue"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pue = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(("name", "value", "message"), list(_cases("bad")))
def test_refused_by_tracker_and_callback(name, value, message, tmp_path, leaves_nothing):
    from carbon_callbacks.integrations.lightning import CarbonCallback

    settings = {"log_dir": str(tmp_path / "logs"), name: _fill(value, tmp_path)}
    with pytest.raises(ConfigError, match=message):
        CarbonTracker(**settings)
    with pytest.raises(ConfigError, match=message):
        CarbonCallback(**settings)


@pytest.mark.parametrize(("settings", "message"), CONTRADICTIONS)
def test_contradictions_refused(settings, message, tmp_path, leaves_nothing):
    with pytest.raises(ConfigError, match=message):
        CarbonTracker(log_dir=str(tmp_path / "logs"), **settings)


@pytest.mark.parametrize(("variable", "value", "message"), ENVIRONMENT)
def test_bad_environment_refused(variable, value, message, tmp_path, monkeypatch, leaves_nothing):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        CarbonTracker(log_dir=str(tmp_path / "logs"))


def test_unknown_setting_lists_the_valid_ones(tmp_path, leaves_nothing):
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['epoch'\]; valid settings are"):
        CarbonTracker(log_dir=str(tmp_path / "logs"), epoch=3)
    with pytest.raises(ConfigError, match="country and zone are the same setting"):
        CarbonTracker(log_dir=str(tmp_path / "logs"), zone="DK", country="SE")
    with pytest.raises(ConfigError, match="not both"):
        CarbonTracker(config=CarbonConfig(log_dir=None), pue=1.2)
    with pytest.raises(ConfigError, match="https://"):  # an endpoint is checked alike
        CarbonTracker(log_dir=str(tmp_path / "logs"), _endpoints={"gb_base_url": "ftp://x"})


#: Settings that would reach out at once if construction did anything.
REACHING_OUT = {
    "zone": "DK1",
    "live_intensity": True,
    "stop_and_confirm": True,
    "_endpoints": {"energidataservice_base_url": "http://127.0.0.1:9"},
}


def test_building_creates_nothing_until_start(tmp_path, monkeypatch):
    from carbon_callbacks.integrations.lightning import CarbonCallback

    log_dir = tmp_path / "new" / "logs"
    threads = set(threading.enumerate())
    connects: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda sock, addr: connects.append(addr))
    tracker = CarbonTracker(log_dir=str(log_dir), **REACHING_OUT)
    CarbonCallback(log_dir=str(log_dir), **REACHING_OUT)
    ip = {"ip_geolocation": True, "_endpoints": {"ip_geolocation_url": "http://127.0.0.1:9/j"}}
    CarbonTracker(log_dir=str(log_dir), **ip)
    assert not (tmp_path / "new").exists()
    assert set(threading.enumerate()) == threads and connects == []
    tracker.stop()  # never started: nothing to undo
    assert not (tmp_path / "new").exists()


def test_start_creates_the_folder_and_degrades_what_it_cannot_do(tmp_path):
    """start() creates log_dir; a question nobody can answer is dropped with one warning."""
    sim = {"components": "cpu", "sim_cpu": "Test CPU", "sim_cpu_tdp": 100.0, "verbose": 0}
    sim.update(zone="DK", epochs=3)
    tracker = CarbonTracker(log_dir=str(tmp_path / "logs"), stop_and_confirm=True, **sim)
    with pytest.warns(UserWarning, match="stdin is not an interactive terminal"):
        tracker.start()
    tracker.stop()
    assert tracker.config.stop_and_confirm is False
    assert tracker.log_path is not None and tracker.log_path.startswith(str(tmp_path / "logs"))
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [tracker.log_path.split("/")[-1]]

    (tmp_path / "file").write_text("")
    blocked = CarbonTracker(log_dir=str(tmp_path / "file" / "logs"), **sim)
    with pytest.warns(UserWarning, match=r"cannot be created .* without a run log"):
        blocked.start()
    blocked.epoch_start()
    metrics = blocked.epoch_end()
    blocked.stop()
    assert blocked.log_path is None and metrics["carbon/epoch_energy_kwh"] > 0
    assert [e.kind for e in blocked.events.events].count("log_dir_unwritable") == 1


def test_carbontracker_names_are_accepted(tmp_path):
    """A carbontracker user changes the import and nothing else."""
    token = "em-token-123456"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = CarbonConfig.from_kwargs(
            log_dir=None, update_interval=5, api_keys={"electricitymaps": token}, interpretable=True
        )
    assert config.interval_s == 5.0 and config.electricitymaps_token == token
    for name, value in (("ignore_errors", False), ("devices_by_pid", True), ("interpretable", 0)):
        with pytest.warns(FutureWarning, match=f"{name} has no effect here"):
            config = CarbonConfig.from_kwargs(log_dir=None, **{name: value})
        assert name not in config.to_dict()
    with pytest.raises(ConfigError, match="same setting"):
        CarbonConfig.from_kwargs(log_dir=None, update_interval=5, interval_s=2)
    with pytest.raises(ConfigError, match=r"api_keys must be .* got \['co2signal'\]") as info:
        CarbonConfig.from_kwargs(log_dir=None, api_keys={"co2signal": token})
    assert token not in str(info.value)


def test_former_endpoint_settings_are_honoured_with_one_warning(tmp_path):
    with pytest.warns(FutureWarning, match="gb_base_url is no longer a setting"):
        config = CarbonConfig.from_kwargs(log_dir=None, gb_base_url="http://127.0.0.1:8/")
    assert config.endpoints == Endpoints(gb_base_url="http://127.0.0.1:8")
    assert "gb_base_url" not in config.to_dict() and "_endpoints" not in config.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CarbonConfig.from_kwargs(log_dir=None, _endpoints=Endpoints(rapl_root=str(tmp_path)))
