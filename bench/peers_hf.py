"""Side by side on a GPU, Hugging Face Trainer: carbon_callbacks, CodeCarbon, carbontracker, Zeus.

    PYTHONPATH=.:/tmp/site python3 -m bench peers hf --reps 2 --out peers_hf.json
    PYTHONPATH=. python3 -m bench peers hf --smoke --out /tmp/peers_hf_smoke.json   # CPU, no peers

The Hugging Face counterpart of ``bench/peers.py``: the small transformer of
``bench/distributed_hf.py`` (GPT-2-shaped, 6 layers, width 512, bf16, random tokens) trains with no
tracker, with our ``CarbonCallback`` (default settings, and with ``gpu_method="sampled"``
forced), and with each peer wrapped around the same epochs by ``on_epoch_begin`` /
``on_epoch_end``. The peers' wrappers are ``bench/peers.py``'s, driven from the Trainer's
callbacks. Modes rotate within each repetition; every run begins after ``--idle-s`` seconds
of idle GPU. One counter poller runs throughout, and each tracker's GPU energy per epoch is
compared with the counter over that tracker's own epoch edges. The JSON has the layout of
``bench/peers.py``'s (``summary`` from :func:`bench.stats.summarise_runs`, kind ``"hf"``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from bench.distributed_hf import Tokens
from bench.peers import (
    SMOKE_POWER_W,
    Windows,
    _versions,
    common_arguments,
    make_tracker,
    print_summary,
    run_rotated,
    save_results,
)
from bench.poller import read_pollers, start_pollers, stop_pollers, window_j
from bench.stats import compare_windows, gpu_j
from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.integrations.huggingface import CarbonCallback

MODES = ("none", "carbon_callbacks", "carbon_callbacks_sampled", "codecarbon", "carbontracker",
         "zeus")  # fmt: skip


class EpochTimer(TrainerCallback):
    """Wall time between successive epoch starts (hooks included), CUDA synchronised."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def _now(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._now()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._now()

    @property
    def epoch_s(self) -> list[float]:
        """Seconds per epoch."""
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


class PeerEpochs(TrainerCallback):
    """Drives one of ``bench/peers.py``'s peer wrappers from the Trainer's epoch callbacks."""

    def __init__(self, peer: Windows) -> None:
        self.peer = peer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.peer.on_train_epoch_start(None, None)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.peer.on_train_epoch_end(None, None)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if hasattr(self.peer, "on_train_end"):
            self.peer.on_train_end(None, None)


def make_callback(mode: str, tmp: str, epochs: int, smoke: bool) -> TrainerCallback | None:
    """The Trainer callback that measures ``mode``'s epochs (None for ``"none"``)."""
    if mode == "none":
        return None
    if mode.startswith("carbon_callbacks"):
        settings: dict[str, Any] = {"log_dir": tmp, "verbose": 0, "zone": "DE"}
        if mode.endswith("_sampled"):
            settings["gpu_method"] = "sampled"
        if smoke:  # no GPU here: a stated GPU power, compared with a made-up counter
            settings.update(sim_gpu="smoke", sim_gpu_watts=SMOKE_POWER_W, sim_gpu_util=1.0)
        return CarbonCallback(**settings)
    peer = make_tracker(mode, tmp, epochs, smoke)
    assert isinstance(peer, Windows)
    return PeerEpochs(peer)


def callback_windows(callback: TrainerCallback) -> tuple[list[tuple[float, float, float]], Any]:
    """(windows, methods) after the fit; methods only for ours."""
    if isinstance(callback, CarbonCallback):
        log = read_run_log(callback.tracker.log_path)
        rows = [(e["start_unix_s"], e["end_unix_s"], gpu_j(e["energy_j"])) for e in log.epochs]
        return rows, log.epochs[0]["methods"] if log.epochs else None
    assert isinstance(callback, PeerEpochs)
    return callback.peer.windows(), None


def fit(args: argparse.Namespace, tmp: str, callback: TrainerCallback | None) -> dict[str, Any]:
    """One training of ``args.epochs`` epochs; epoch times."""
    torch.manual_seed(0)
    if args.smoke:
        config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=256, n_positions=32)
        data, batch = Tokens(64, 32, 256), 16
    else:
        config = GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=8192, n_positions=256)
        data, batch = Tokens(2048, 256, 8192), 32
    targs = TrainingArguments(
        output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=batch,
        logging_strategy="epoch", eval_strategy="no", save_strategy="no", report_to="none",
        disable_tqdm=True, bf16=not args.smoke, use_cpu=args.smoke,
    )  # fmt: skip
    timer = EpochTimer()
    callbacks: list[TrainerCallback] = [timer] + ([callback] if callback is not None else [])
    trainer = Trainer(
        model=GPT2LMHeadModel(config), args=targs, train_dataset=data, callbacks=callbacks
    )
    trainer.train()
    return {"epoch_s": timer.epoch_s}


def run_one(args: argparse.Namespace, tmp: str, pollers: list, mode: str,
            idle_until: float) -> dict[str, Any]:  # fmt: skip
    """One fit with ``mode``'s tracker, after idling until ``idle_until`` (monotonic s)."""
    callback = make_callback(mode, tmp, args.epochs, args.smoke)
    time.sleep(max(0.0, idle_until - time.monotonic()))
    start = time.time()
    record = fit(args, tmp, callback)
    time.sleep(0.3)  # the poller's step after the last edge
    steps = read_pollers(pollers)
    try:
        record["idle_w_before"] = window_j(steps, start - 1.0, start)
    except ValueError:  # the poller had not run for 1 s yet
        record["idle_w_before"] = None
    if callback is not None:
        windows, methods = callback_windows(callback)
        record["epochs"] = compare_windows(windows, lambda a, b: window_j(steps, a, b))
        record["methods"] = methods
        if len(windows) != args.epochs:
            record["note"] = f"{len(windows)} windows for {args.epochs} epochs"
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(parser, "peers_hf.json", 2, MODES)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in (("epochs", 3), ("idle_s", 0.3), ("reps", 1)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    unknown = {m for m in args.modes.split(",") if m} - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, Any] = {
        "meta": {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                 "versions": _versions(), "smoke": args.smoke,
                 "started_at_unix_s": time.time()},
        "settings": {"reps": args.reps, "modes": modes, "epochs": args.epochs,
                     "idle_s": args.idle_s, "max_s": args.max_s},
        "runs": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        fake_w = SMOKE_POWER_W if args.smoke else None
        pollers = start_pollers(tmp, gpus=1, max_s=args.max_s + 120.0, fake_w=fake_w)
        fit(args, tmp, None)  # kernels and libraries loaded once, untimed
        ended = [time.monotonic()]  # when the last run ended: the idle clock

        def run(mode: str, kind: str) -> dict[str, Any]:
            try:
                return run_one(args, tmp, pollers, mode, ended[0] + args.idle_s)
            finally:
                ended[0] = time.monotonic()

        try:
            run_rotated(args, results, modes, ["hf"], started, run)
        finally:
            stop_pollers(pollers)
            save_results(results, args.out, started)
    print_summary(results["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
