"""Fixtures shared by the reliability cells: a clean environment, restored signal handlers."""

from __future__ import annotations

import signal
import sys
import threading

import pytest

from .harness import carbon_threads


@pytest.fixture(autouse=True)
def _clean_process_state(monkeypatch):
    """No setting leaks in from the environment; signal handlers and threads are checked after."""
    for name in (
        "CUDA_VISIBLE_DEVICES",
        "CARBON_CALLBACKS_ZONE",
        "CARBON_CALLBACKS_INTENSITY_G_PER_KWH",
        "CARBON_CALLBACKS_OFFLINE",
        "CARBON_CALLBACKS_PUE",
    ):
        monkeypatch.delenv(name, raising=False)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    # Lightning ignores SIGINT after a KeyboardInterrupt; put pytest's handlers back
    for sig, handler in handlers.items():
        if signal.getsignal(sig) is not handler and handler is not None:
            signal.signal(sig, handler)
    assert carbon_threads() == [], "a carbon_callbacks thread outlived its test"


@pytest.fixture(scope="session")
def killed_lightning_run(tmp_path_factory):
    """A real Lightning training in a child process, SIGKILLed after 3 epochs, with a checkpoint
    saved after every epoch: shared by the SIGKILL cell and the resume cells."""
    from .processes import run_child

    root = tmp_path_factory.mktemp("killed")
    settings = {
        "log_dir": str(root / "carbon"),
        "zone": "DK",
        "interval_s": 0.02,
        "verbose": 0,
        "_endpoints": {"rapl_root": str(root / "no-powercap")},
        "sim_cpu": "Test CPU",
        "sim_cpu_tdp": 100.0,
        "components": "cpu",
    }
    spec = {
        "driver": "lightning",
        "settings": settings,
        "epochs": 50,
        "step_sleep_s": 0.05,
        "checkpoint_dir": str(root / "ckpt"),
    }
    result = run_child(spec, signal_at_epoch=3, signum=signal.SIGKILL)
    return root, settings, result


_SOCKET_EVENTS = ("socket.__new__", "socket.connect", "socket.getaddrinfo", "socket.bind")
_ATTEMPTS: list[str] = []
_BLOCK_ALL = threading.Event()


def _audit(event, args):
    if event in _SOCKET_EVENTS and _BLOCK_ALL.is_set():
        _ATTEMPTS.append(f"{event}{args!r}"[:200])
        raise OSError(f"socket use refused in an offline test: {event}")


sys.addaudithook(_audit)  # audit hooks cannot be removed; it is inert unless _BLOCK_ALL is set


@pytest.fixture
def no_socket():
    """Every socket creation, connection, name lookup or bind in this process fails (from any
    thread, C extensions included: a Python audit hook), and is remembered in the list yielded."""
    _ATTEMPTS.clear()
    _BLOCK_ALL.set()
    try:
        yield _ATTEMPTS
    finally:
        _BLOCK_ALL.clear()
