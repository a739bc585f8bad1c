"""SIGINT / SIGTERM during sampling: noted by a guard, so the step loop saves its state and stops
(:mod:`medrecon.samplers.loop`), then reported as :class:`SamplingInterrupted`."""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

from medrecon.errors import Interrupted


class SamplingInterrupted(Interrupted):
    """SIGINT/SIGTERM arrived during sampling; the state was saved and the run can be resumed."""


class InterruptGuard:
    """While active, SIGINT and SIGTERM only set :attr:`requested` (the loop then saves and
    stops). The first signal restores the previous handlers, so a second Ctrl-C acts at once.
    Inactive outside the main thread (Python delivers signals there only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> "InterruptGuard":
        if self.enabled:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()
