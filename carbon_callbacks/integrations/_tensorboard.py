"""TensorBoard scalars without TensorFlow and without torch.

Keras' own ``keras.callbacks.TensorBoard`` needs TensorFlow, so on the torch or JAX backend it
cannot run. This writer uses only the ``tensorboard`` package (its ``EventFileWriter``, the one
torch's ``SummaryWriter`` wraps too), so it works on every Keras backend and adds no dependency
beyond the ``keras`` extra. Values are written as ``simple_value`` scalars: TensorBoard and
``EventAccumulator.Scalars`` read them directly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any


class ScalarWriter:
    """Append scalars to one TensorBoard event file in ``log_dir``.

    Creating it starts the event writer's flushing thread; :meth:`close` stops it.
    """

    def __init__(self, log_dir: str | os.PathLike[str]):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.log_dir = str(log_dir)
        self._writer: Any = EventFileWriter(self.log_dir)

    def write(self, scalars: Mapping[str, Any], step: int) -> None:
        """Write every finite number in ``scalars`` under its key as tag, at ``step``, and flush.

        Non-numbers and NaN/inf (e.g. a prediction not made yet) are left out: a chart cannot
        show them.
        """
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [
            Summary.Value(tag=key, simple_value=float(value))
            for key, value in scalars.items()
            if isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        ]
        if values:
            event = Event(wall_time=time.time(), step=int(step), summary=Summary(value=values))
            self._writer.add_event(event)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        self._writer.close()
