"""Finding what a framework did not hand its callbacks, in the frames of the code calling them.

Keras passes callbacks neither its ``CallbackList`` nor ``fit``'s arguments, and the Hugging Face
Trainer does not pass itself; all of them are in a frame a few levels up from the hook.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


def find_up(match: Callable[[FrameType], T | None], depth: int) -> T | None:
    """The first non-None ``match(frame)`` over the ``depth`` frames above the caller, or None.

    The frames are not kept: ``match`` should return what it reads from one, not the frame.
    """
    frame = inspect.currentframe()
    try:
        frame = frame.f_back if frame is not None else None  # the caller: the search starts above
        for _ in range(depth):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            found = match(frame)
            if found is not None:
                return found
        return None
    finally:
        del frame
