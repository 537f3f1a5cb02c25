"""``carbon-callbacks run -- COMMAND``: a child-process tree that burns a known amount of CPU,
exit codes passed through, and SIGTERM / SIGINT forwarded with the footer still written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from power_traces import ConstantCounterSensor

from carbon_callbacks.cli import run as command_run
from carbon_callbacks.cli.run import run_command, signal_tree
from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.sensors.cpu_model import CpuModelSensor

ROOT = Path(__file__).resolve().parents[1]
BURN_CPU_S = 0.4

BURNER = f"""
import subprocess, sys, time

def burn(cpu_s):
    start = time.process_time()
    while time.process_time() - start < cpu_s:
        pass

if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, __file__, "child"])
    burn({BURN_CPU_S})
    child.wait()
    sys.exit(int(sys.argv[2]))
burn({BURN_CPU_S})
"""

SLEEPER = """
import pathlib, signal, subprocess, sys, time
out = pathlib.Path(sys.argv[1])
# the grandchild says when its interpreter is up: a SIGINT during start-up can be swallowed
# by site.py (it prints "Error processing line ... .pth" and goes on), and a grandchild that
# lives on keeps the CLI's output pipes open
grand = subprocess.Popen(
    [sys.executable, "-c", "import pathlib, sys, time; "
     "pathlib.Path(sys.argv[1]).write_text('1'); time.sleep(60)", str(out / "grand_up")]
)
(out / "grandchild.pid").write_text(str(grand.pid))
while not (out / "grand_up").exists():
    time.sleep(0.01)
count = {"n": 0}

def on_signal(signum, frame):
    count["n"] += 1
    (out / "child_got").write_text(f"{signum} {count['n']}")
    if signum == signal.SIGTERM:
        grand.wait(timeout=20)  # the grandchild got the forwarded signal too
        sys.exit(7)

signal.signal(signal.SIGTERM, on_signal)
if len(sys.argv) > 2:
    signal.signal(signal.SIGINT, on_signal)
(out / "ready").write_text("1")
deadline = time.time() + 60
while time.time() < deadline and count["n"] == 0:
    time.sleep(0.02)
time.sleep(0.3)  # a second delivery would be counted here
sys.exit(0 if count["n"] else 9)
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "carbon_callbacks.cli", *argv]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _only_log(folder: Path) -> Path:
    (log,) = folder.glob("*.carbon.jsonl")
    return log


def _cpu_time_of_tree(records: list[dict]) -> float:
    (event,) = [r for r in records if r["type"] == "event" and r["kind"] == "command_exit"]
    match = re.search(r"CPU time of the command tree ([0-9.]+) s", event["message"])
    assert match, event["message"]
    return float(match.group(1))


def _wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_burning_tree_is_measured_start_to_end_and_exit_code_passes(tmp_path):
    script = tmp_path / "burn.py"
    script.write_text(BURNER, encoding="utf-8")
    logs = tmp_path / "logs"
    argv = ["run", "--log-dir", str(logs), "--zone", "SE", "--pue", "1.1", "--components", "cpu"]
    argv += ["--sim-cpu", "stated", "--sim-cpu-tdp", "100", "-f", "json"]
    proc = subprocess.run(
        _cli(*argv, "--", sys.executable, str(script), "parent", "5"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 5, proc.stderr
    records = _records(_only_log(logs))
    header, epochs = records[0], [r for r in records if r["type"] == "epoch"]
    footer = records[-1]
    assert footer["type"] == "footer" and footer["status"] == "failed"  # exit code 5
    assert header["config"]["extra"]["command"][-2:] == ["parent", "5"]
    (epoch,) = epochs
    # the tree burnt 2 x BURN_CPU_S CPU-seconds, in parallel at best: the epoch spans the one
    assert BURN_CPU_S <= epoch["duration_s"] < 30
    cpu_s = _cpu_time_of_tree(records)
    assert 2 * BURN_CPU_S <= cpu_s < 2 * BURN_CPU_S + 2.0  # + interpreter start-up
    # constant 100 W x 0.5 (carbontracker's sim_cpu_util default) over the epoch, x PUE
    assert epoch["energy_j"]["cpu:sim"] == pytest.approx(50.0 * epoch["duration_s"], rel=0.02)
    assert footer["energy_kwh"] == pytest.approx(50.0 * epoch["duration_s"] / 3.6e6 * 1.1, rel=0.02)
    report = json.loads(proc.stderr[proc.stderr.index("{") :])  # report printed on stderr
    assert report["totals"]["energy_kwh"] == pytest.approx(footer["energy_kwh"])
    assert report["runs"][0]["intensity_zone"] == "SE"


def test_cpu_model_sees_the_burning_tree(tmp_path):
    """Without stated power, the CPU model (TDP x machine utilisation) must see at least the
    CPU-seconds the tree burnt: energy >= TDP x cpu_s / logical CPUs (others only add)."""
    script = tmp_path / "burn.py"
    script.write_text(BURNER, encoding="utf-8")
    logs = tmp_path / "logs"
    proc = subprocess.run(
        _cli(
            "run",
            "--log-dir",
            str(logs),
            "--zone",
            "FR",
            "--components",
            "cpu",
            "--interval-s",
            "0.1",
            "--",
            sys.executable,
            str(script),
            "parent",
            "0",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    records = _records(_only_log(logs))
    assert records[-1]["status"] == "completed"
    (epoch,) = [r for r in records if r["type"] == "epoch"]
    methods = set(epoch["methods"].values())
    if methods != {"modelled"}:
        pytest.skip(f"this machine measures the CPU by {methods}, not the model")
    cpu_j = sum(j for name, j in epoch["energy_j"].items() if name.startswith("cpu"))
    full_w = CpuModelSensor().tdp_w
    lower_j = full_w * _cpu_time_of_tree(records) / psutil.cpu_count(logical=True)
    assert cpu_j >= 0.6 * lower_j  # sampling edges at the start and end of the window


def test_exit_codes(tmp_path):
    logs = str(tmp_path / "logs")
    env = _env()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            _cli("run", "--log-dir", logs, "--zone", "DK", "--components", "cpu", "--", *command),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    assert run("sh", "-c", "exit 3").returncode == 3
    assert run("sh", "-c", "exit 0").returncode == 0
    killed = run("sh", "-c", "kill -KILL $$")
    assert killed.returncode == 128 + signal.SIGKILL
    missing = run("no-such-command-xyz")
    assert missing.returncode == command_run.EXIT_NOT_FOUND
    assert "command not found: no-such-command-xyz" in missing.stderr
    not_exec = tmp_path / "plain.txt"
    not_exec.write_text("x", encoding="utf-8")
    assert run(str(not_exec)).returncode == command_run.EXIT_NOT_EXECUTABLE
    no_command = subprocess.run(
        _cli("run", "--log-dir", logs), env=env, capture_output=True, text=True, timeout=60
    )
    assert no_command.returncode == 2 and "no command given" in no_command.stderr
    statuses = sorted(_records(p)[-1]["status"] for p in Path(logs).glob("*.carbon.jsonl"))
    assert statuses == ["completed"] + ["failed"] * 4  # every run has its footer


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_and_the_footer_written(tmp_path, sig):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER, encoding="utf-8")
    logs = tmp_path / "logs"
    proc = subprocess.Popen(
        _cli(
            "run",
            "--log-dir",
            str(logs),
            "--zone",
            "DK",
            "--components",
            "cpu",
            "--",
            sys.executable,
            str(script),
            str(tmp_path),
        ),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no terminal: signals come from us
    )
    try:
        _wait_for(tmp_path / "ready")
        grandchild = int((tmp_path / "grandchild.pid").read_text())
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 7, stderr  # the command's own exit code
        assert (tmp_path / "child_got").read_text() == f"{int(signal.SIGTERM)} 1"
    else:
        assert proc.returncode == 128 + signal.SIGINT, stderr  # KeyboardInterrupt in the child
    try:  # the grandchild got the signal as well (gone, or a zombie awaiting its reaper)
        assert psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    records = _records(_only_log(logs))
    assert records[-1]["type"] == "footer" and records[-1]["status"] == "interrupted"
    assert len([r for r in records if r["type"] == "epoch"]) == 1
    assert "interrupted" in stderr and "Runs (1 counted)" in stderr


def test_in_process_sigterm_with_exact_energy_and_no_double_sigint(tmp_path, monkeypatch):
    """In-process: SIGTERM to this process is forwarded once; a terminal-style SIGINT (sent to
    the whole group by the terminal) is not sent a second time."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER, encoding="utf-8")
    config = CarbonConfig(log_dir=tmp_path / "logs", zone="DK", pue=1.0, verbose=0, interval_s=0.05)
    handler_before = signal.getsignal(signal.SIGTERM)  # another test may have left one

    def send_later(sig, also_child):
        _wait_for(tmp_path / "ready")
        time.sleep(0.2)
        if also_child:  # what a terminal does on Ctrl-C: the whole foreground group
            for p in psutil.Process().children(recursive=True):
                os.kill(p.pid, sig)
        os.kill(os.getpid(), sig)

    thread = threading.Thread(target=send_later, args=(signal.SIGTERM, False))
    thread.start()
    result = run_command(
        [sys.executable, str(script), str(tmp_path)],
        config,
        sensors=[ConstantCounterSensor("cpu:const", 40.0, component="cpu")],
    )
    thread.join()
    assert result.exit_code == 7 and result.status == "interrupted"
    assert result.signals == [signal.SIGTERM]
    records = _records(Path(result.log_path))
    (epoch,) = [r for r in records if r["type"] == "epoch"]
    assert epoch["energy_j"]["cpu:const"] == pytest.approx(40.0 * epoch["duration_s"], rel=0.01)
    assert records[-1]["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == handler_before  # handlers restored

    for name in ("ready", "child_got"):
        (tmp_path / name).unlink()
    monkeypatch.setattr(command_run, "_terminal_delivered_sigint", lambda: True)
    thread = threading.Thread(target=send_later, args=(signal.SIGINT, True))
    thread.start()
    result = run_command(
        [sys.executable, str(script), str(tmp_path), "catch-sigint"],
        config,
        sensors=[ConstantCounterSensor("cpu:const", 40.0, component="cpu")],
    )
    thread.join()
    assert result.status == "interrupted" and result.exit_code == 0
    assert (tmp_path / "child_got").read_text() == f"{int(signal.SIGINT)} 1"  # exactly once


def test_signal_tree_reaches_grandchildren(tmp_path):
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(proc.pid).children()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        kids = [c.pid for c in psutil.Process(proc.pid).children()]
        sent = signal_tree(proc.pid, signal.SIGTERM)
        assert set(kids) | {proc.pid} <= set(sent)
        assert proc.wait(timeout=10) != 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_progress_lines_show_elapsed_time_and_energy(tmp_path):
    import io

    stream = io.StringIO()
    config = CarbonConfig(log_dir=tmp_path, zone="DK", verbose=0, interval_s=0.05)
    result = run_command(
        [sys.executable, "-c", "import time; time.sleep(0.65)"],
        config,
        sensors=[ConstantCounterSensor("cpu:const", 36.0, component="cpu")],
        progress_interval_s=0.2,
        progress_stream=stream,
    )
    assert result.exit_code == 0 and result.status == "completed"
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 5
    assert all("elapsed" in line and "kWh" in line and "gCO2eq so far" in line for line in lines)
    energies = [float(re.search(r"([0-9.e+-]+) kWh", line).group(1)) for line in lines]
    assert energies == sorted(energies) and energies[-1] > 0
