"""A tiny training in a child process, for the cells that kill or signal a real run.

``python child.py '<json>'`` with the keys:

- ``driver``: ``"lightning"`` or ``"core"`` (see :mod:`harness`);
- ``settings``: tracker settings, or null to train without a tracker (the baseline);
- ``epochs``, ``step_sleep_s``: the training's length;
- ``sigterm``: ``"default"`` (leave SIGTERM as Python has it) or ``"exit3"`` (the user's own
  handler: print ``USER_HANDLER`` and ``sys.exit(3)``), installed before training;
- ``checkpoint_dir``: Lightning only, save ``last.ckpt`` after every epoch.

It prints ``EPOCH <n>`` when epoch ``n`` starts, that is once ``n`` epochs are finished and,
with a tracker, recorded in the run log; then the parent may kill it. The exception that ended
training is raised again, so the exit status is the one training would give on its own.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]  # the package, then tests/

from reliability.harness import train  # noqa: E402


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("sigterm") == "exit3":

        def user_handler(signum, frame):
            print("USER_HANDLER", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, user_handler)
    trainer_kwargs = {}
    if spec.get("checkpoint_dir"):
        from lightning.pytorch.callbacks import ModelCheckpoint

        trainer_kwargs = {
            "enable_checkpointing": True,
            "default_root_dir": spec["checkpoint_dir"],
            "callbacks": [ModelCheckpoint(dirpath=spec["checkpoint_dir"], save_last=True)],
        }

    def announce(epoch: int) -> None:
        print(f"EPOCH {epoch}", flush=True)

    run = train(
        spec["driver"],
        spec["settings"],
        epochs=spec["epochs"],
        on_epoch_start=announce,
        step_sleep_s=spec.get("step_sleep_s", 0.0),
        trainer_kwargs=trainer_kwargs,
    )
    print(f"DONE {run.epochs_trained}", flush=True)
    if run.error is not None:
        raise run.error


if __name__ == "__main__":
    main()
