"""Matrix row disk: log_dir not writable at start (refused), becomes unwritable mid-run (warned
once, measuring goes on, the records are kept in memory and written when the disk comes back),
the disk fills up, the folder is deleted or replaced by a file mid-run.

Faults that the root user running the tests would not meet (read-only mount, full disk) are made
by a :class:`DiskFault` that fails ``os.open``/``os.write`` for files under ``log_dir`` with the
errno the kernel gives; the folder removed or replaced are real.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

import pytest

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.events import CarbonCallbacksWarning
from carbon_callbacks.core.tracker import CarbonTracker

from .harness import DRIVERS, base_settings, baseline, check_cell, train

each_driver = pytest.mark.parametrize("driver", DRIVERS)


class DiskFault:
    """While ``active``, writing files under ``folder`` fails with ``err`` (opens too, unless
    ``err`` is ENOSPC: a full disk still opens files, it only refuses data)."""

    def __init__(self, monkeypatch, folder, err: int):
        self.folder = str(folder)
        self.err = err
        self.active = False
        self.failed_calls = 0
        real_write, real_open = os.write, os.open

        def write(fd, data):
            if self.active and self._ours(fd):
                self.failed_calls += 1
                raise OSError(err, os.strerror(err))
            return real_write(fd, data)

        def open_(path, flags, mode=0o777, *, dir_fd=None):
            writing = flags & (os.O_WRONLY | os.O_RDWR)
            if self.active and writing and err != errno.ENOSPC and self._under(path):
                self.failed_calls += 1
                raise OSError(err, os.strerror(err), str(path))
            return real_open(path, flags, mode, dir_fd=dir_fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "open", open_)

    def _under(self, path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(self.folder)

    def _ours(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.folder)
        except OSError:
            return False


def _settings(tmp_path):
    return base_settings(tmp_path, sim_cpu="Test CPU", sim_cpu_tdp=100.0, components="cpu")


# -- not writable at start: the run goes on without a run log ---------------------------------
def _without_run_log(tmp_path, log_dir, match):
    tracker = CarbonTracker(**{**_settings(tmp_path), "log_dir": str(log_dir)})  # creates nothing
    with pytest.warns(CarbonCallbacksWarning, match=match):
        tracker.start()
    tracker.epoch_start()
    assert tracker.epoch_end()[keys.EPOCH_ENERGY_KWH] > 0  # still measured
    tracker.stop()
    assert tracker.log_path is None
    assert [e.kind for e in tracker.events.events].count("log_dir_unwritable") == 1


def test_log_dir_under_a_file_leaves_the_run_without_a_log(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    _without_run_log(tmp_path, tmp_path / "file" / "logs", "cannot be created .* pass log_dir=None")


@pytest.mark.parametrize(
    ("err", "words"), [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only")]
)
def test_unwritable_log_dir_leaves_the_run_without_a_log(tmp_path, monkeypatch, err, words):
    folder = tmp_path / "logs"
    folder.mkdir()

    def refuse(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    # what the probe in check_writable_dir meets on a read-only mount or without permission
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    _without_run_log(tmp_path, folder, f"not writable \\({words}")


# -- unwritable during the run ------------------------------------------------------------------
def _kept_measuring(run):
    """Every epoch reached the user's logger, and the totals are right, whatever the disk did."""
    assert len(run.epoch_metrics) == 3
    total = sum(m[keys.EPOCH_ENERGY_KWH] for m in run.epoch_metrics)
    assert total > 0
    # totals: the epochs plus tracked work between them (Lightning's sanity check)
    assert run.tracker.totals()[keys.ENERGY_KWH] >= total * (1 - 1e-9)
    assert run.epoch_metrics[-1][keys.ENERGY_KWH] == pytest.approx(
        run.tracker.totals()[keys.ENERGY_KWH]
    )


@each_driver
@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC, errno.EIO])
def test_unwritable_from_mid_run_to_the_end(driver, tmp_path, monkeypatch, err, capsys):
    fault = DiskFault(monkeypatch, tmp_path / "carbon", err)

    def on_epoch_start(epoch):
        fault.active = epoch >= 1

    settings = {**_settings(tmp_path), "verbose": 1}
    run = train(driver, settings, on_epoch_start=on_epoch_start)
    log = check_cell(run, baseline(driver), warned=["cannot write the run log"])
    _kept_measuring(run)
    # on disk: what was written before the fault, readable, without footer
    assert [e["epoch"] for e in log.epochs] == [0] and log.footer is None
    # in memory: everything after it, footer included, ready to be saved elsewhere
    kept = run.tracker.unwritten_records()
    assert [r["epoch"] for r in kept if r["type"] == "epoch"] == [1, 2]
    assert kept[-1]["type"] == "footer" and kept[-1]["status"] == "completed"
    assert kept[-1]["energy_kwh"] == pytest.approx(run.tracker.totals()[keys.ENERGY_KWH])
    assert "log_write_failed" in [r.get("kind") for r in kept]
    report = capsys.readouterr().out
    assert "actual consumption (completed, 3 epoch(s))" in report
    assert "INCOMPLETE" in report and "unwritten_records()" in report


@each_driver
@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC])
def test_disk_back_before_the_end_completes_the_log(driver, tmp_path, monkeypatch, err):
    fault = DiskFault(monkeypatch, tmp_path / "carbon", err)

    def on_epoch_start(epoch):
        fault.active = epoch == 1  # full / read-only during epoch 1 only

    run = train(driver, _settings(tmp_path), on_epoch_start=on_epoch_start)
    log = check_cell(run, baseline(driver), warned=["cannot write the run log"])
    assert fault.failed_calls >= 1
    _kept_measuring(run)
    assert run.tracker.unwritten_records() == []
    assert [e["epoch"] for e in log.epochs] == [0, 1, 2]
    assert log.footer["status"] == "completed" and log.corrupt_lines == 0
    kinds = [e["kind"] for e in log.events]
    assert kinds.count("log_write_failed") == 1 and kinds.count("log_write_recovered") == 1


@each_driver
def test_log_dir_deleted_mid_run(driver, tmp_path):
    def on_epoch_start(epoch):
        if epoch == 1:
            shutil.rmtree(tmp_path / "carbon")

    run = train(driver, _settings(tmp_path), on_epoch_start=on_epoch_start)
    log = check_cell(run, baseline(driver), warned=["removed or replaced"])
    _kept_measuring(run)
    # a new file, readable on its own: the header again, the later epochs, complete totals
    assert log.header["run_id"] == run.tracker.run_id
    assert [e["epoch"] for e in log.epochs] == [1, 2]
    assert log.totals()["energy_kwh"] == pytest.approx(run.tracker.totals()[keys.ENERGY_KWH])


@each_driver
def test_log_dir_replaced_by_a_file_mid_run(driver, tmp_path):
    folder = tmp_path / "carbon"

    def on_epoch_start(epoch):
        if epoch == 1:
            shutil.rmtree(folder)
            folder.write_text("someone else's file")

    run = train(driver, _settings(tmp_path), on_epoch_start=on_epoch_start)
    check_cell(run, baseline(driver), warned=["removed or replaced"], read_log=False)
    _kept_measuring(run)
    assert folder.read_text() == "someone else's file"  # never overwritten
    kept = run.tracker.unwritten_records()
    assert [r["epoch"] for r in kept if r["type"] == "epoch"] == [1, 2]
    assert "log_write_failed" in [r.get("kind") for r in kept]
    assert kept[-1]["type"] == "footer" and kept[-1]["status"] == "completed"
