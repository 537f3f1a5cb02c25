"""SIGTERM: the run log gets its footer, and the process does what it would have done anyway.

Schedulers (SLURM's time limit, Kubernetes, ``docker stop``, ``timeout``) end jobs with SIGTERM.
Python's default action for it ends the process at once, with no ``finally`` and no ``atexit``,
so a run log would have no footer. A started tracker therefore chains a handler in front of the
one installed before it (on the main thread only: Python allows handlers nowhere else). When
SIGTERM arrives:

1. What happens next is decided by the handler that was there before the tracker's:

   * the default action (``SIG_DFL``, the usual case): the tracker stops completely (footer with
     status ``"interrupted"`` and ``"signal": "SIGTERM"``, threads joined, final report
     printed), puts ``SIG_DFL`` back and raises the signal again, so the process ends exactly as
     it would have: killed by SIGTERM (exit status -15 / 143);
   * a Python function (yours, or a framework's): the tracker writes the same footer but keeps
     measuring, then calls that function with the same arguments. Whatever it does (return and
     let training go on, raise ``SystemExit``, save a checkpoint) is unchanged; if the run goes
     on, :meth:`~carbon_callbacks.core.tracker.CarbonTracker.stop` later writes a newer footer,
     and readers take the last one;
   * when another handler was installed over the tracker's and calls it as "the previous
     handler" (PyTorch Lightning composes existing handlers this way and then finishes the
     step, raising its own ``SIGTERMException``), the tracker only writes the footer and
     returns: ending the process there would overrule the handler that took over.

2. Not installed, with an info event saying why (not warned: nothing is wrong yet): off the main
   thread; when the current handler was installed from C (``signal.getsignal`` returns
   ``None``) and cannot be chained. Not installed, silently: when SIGTERM is ignored
   (``SIG_IGN``; then it changes nothing) and on platforms without SIGTERM.

3. Removed at ``stop()`` when it is still the installed handler (the previous one is put back).
   When another handler was installed over it, it stays in that handler's chain; called after
   its tracker stopped, it only passes the signal on as in 1.

Safety: a Python signal handler runs on the main thread between two bytecodes, possibly in the
middle of a tracker call that holds a lock (the meter's, the run log's). A SIGTERM that lands
inside a tracker call is therefore handled when that call returns (microseconds to
milliseconds later), footer, previous handler and all. The handler holds its tracker weakly.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

#: The signal handled (``None`` where the platform has none).
SIGNAL: int | None = getattr(signal, "SIGTERM", None)


def _guard_of(handler: Any) -> SigtermChain | None:
    """The chain a handler belongs to, when it is one of ours."""
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, SigtermChain) else None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class SigtermChain:
    """One tracker's SIGTERM handler, chained in front of the previous one (see module doc).

    Args:
        on_signal: the tracker's callback, called on the main thread as
            ``on_signal(terminating)``: ``True`` when the process is about to end by SIGTERM's
            default action (stop completely), ``False`` when a previous handler decides (write
            the footer, keep measuring). Held weakly. Its exceptions are swallowed.
    """

    def __init__(self, on_signal: Callable[[bool], None]):
        self._on_signal = weakref.WeakMethod(on_signal)  # type: ignore[arg-type]
        self._previous: Any = None
        self.installed = False
        self._depth = 0  # nesting of tracker calls running on the main thread
        self._deferred: list[Callable[[], None]] = []

    # -- installing ------------------------------------------------------------------------------
    def install(self) -> str | None:
        """Install the handler. Returns ``None``, or why it was not installed (for an event)."""
        if SIGNAL is None or self.installed:
            return None
        if not _on_main_thread():
            return (
                "the tracker started outside the main thread, where Python cannot install signal "
                "handlers; a SIGTERM will end the run without a footer (epochs already written "
                "stay readable)"
            )
        previous = signal.getsignal(SIGNAL)
        if previous is None:
            return (
                "SIGTERM is handled by code outside Python, which cannot be chained, so it is "
                "left alone; a SIGTERM may end the run without a footer (epochs already written "
                "stay readable)"
            )
        if previous == signal.SIG_IGN:
            return None  # SIGTERM changes nothing here: nothing to record
        try:
            signal.signal(SIGNAL, self._handle)
        except (ValueError, OSError) as exc:
            return f"cannot install a SIGTERM handler ({exc}); a SIGTERM would leave no footer"
        self._previous = previous
        self.installed = True
        return None

    def uninstall(self) -> None:
        """Put the previous handler back if ours is still installed; idempotent, never raises."""
        if not self.installed:
            return
        self.installed = False
        if SIGNAL is None or not _on_main_thread():
            return  # stays; called later, it only passes the signal on
        with contextlib.suppress(ValueError, OSError, TypeError):
            if signal.getsignal(SIGNAL) == self._handle:
                previous = self._previous
                while (guard := _guard_of(previous)) is not None and not guard.installed:
                    previous = guard._previous  # skip chains whose tracker stopped meanwhile
                signal.signal(SIGNAL, previous)

    # -- deferral --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Wrap a tracker call: a SIGTERM landing inside it is handled when it returns."""
        if not _on_main_thread():
            yield
            return
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            while self._depth == 0 and self._deferred:
                self._deferred.pop(0)()

    # -- handling --------------------------------------------------------------------------------
    def _chain(self) -> tuple[list[SigtermChain], Any]:
        """Our chains from this one down, and the first handler below them that is not ours."""
        chain = [self]
        previous = self._previous
        while (guard := _guard_of(previous)) is not None and guard not in chain:
            chain.append(guard)
            previous = guard._previous
        return chain, previous

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """The installed handler."""
        top = signal.getsignal(signum) == self._handle
        self._run(signum, frame, top)

    def _run(self, signum: int, frame: FrameType | None, top: bool) -> None:
        chain, below = self._chain()
        busy = next((guard for guard in chain if guard._depth > 0), None)
        if busy is not None:
            busy._deferred.append(lambda: self._run(signum, frame, top))
            return
        terminating = top and below == signal.SIG_DFL
        for guard in chain:
            guard._notify(terminating)
        if callable(below):
            below(signum, frame)
        elif terminating:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)  # ends the process, as SIGTERM would have

    def _notify(self, terminating: bool) -> None:
        callback = self._on_signal()
        if callback is None:
            return
        try:
            callback(terminating)
        except Exception:  # noqa: BLE001 - the signal must reach the previous handler regardless
            pass
