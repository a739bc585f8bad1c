"""Progress output: a tqdm bar on a terminal, periodic log lines when stderr is not a terminal.

A bar redrawn with carriage returns turns a log file into a few huge lines (a 24-slice run
used to write one 10 kB line). When stderr is redirected (a batch job, ``nohup``, CI), each
update is written as its own line, at most one every :data:`LOG_INTERVAL` seconds, plus the
first and the last. Use :func:`tqdm` exactly like ``tqdm.auto.tqdm``.

Every bar names its method and stage: :func:`stage` sets a label (e.g. ``"dds warm start"``)
that prefixes the ``desc`` of every bar opened inside it (``"dds warm start: ADMM-TV"``), so
nested solvers need not know who called them.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Any, Callable, Iterator, TextIO, TypeVar

LOG_INTERVAL = 30.0
"""Seconds between progress lines when stderr is not a terminal."""


class _Lines:
    """A file for tqdm that writes every status as one line of its own (no carriage returns,
    no blank or repeated lines)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            part = part.strip()
            if part and part != self.last:
                self.stream.write(part + "\n")
                self.last = part

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


_STAGE: contextvars.ContextVar[str] = contextvars.ContextVar("medrecon_progress_stage", default="")
F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def stage(label: str) -> Iterator[None]:
    """Bars opened inside are labelled ``label`` (the innermost label wins)."""
    token = _STAGE.set(label)
    try:
        yield
    finally:
        _STAGE.reset(token)


def labelled(label: str, function: F) -> F:
    """``function`` run inside :func:`stage` ``(label)``."""
    def run(*args: Any, **kwargs: Any) -> Any:
        with stage(label):
            return function(*args, **kwargs)
    return run  # type: ignore[return-value]


def describe(desc: str | None) -> str:
    """A bar's description with the current stage label: ``"label: desc"`` (``desc`` alone when
    there is no label, the label alone when it is the description)."""
    label, desc = _STAGE.get(), desc or ""
    if not label or desc == label:
        return desc or label
    return f"{label}: {desc}" if desc else label


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(*args, **kwargs)`` on a terminal; otherwise a plain tqdm that writes
    periodic lines to stderr (kept after it closes, so the final count is in the log). The
    ``desc`` is prefixed with the current :func:`stage` label."""
    kwargs["desc"] = describe(kwargs.get("desc"))
    if "file" in kwargs or _is_terminal(sys.stderr):
        from tqdm.auto import tqdm as auto_tqdm
        return auto_tqdm(*args, **kwargs)
    from tqdm.std import tqdm as std_tqdm

    kwargs.update(file=_Lines(sys.stderr), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL,
                  ascii=True, ncols=100, leave=True)
    return std_tqdm(*args, **kwargs)


__all__ = ["tqdm", "LOG_INTERVAL", "stage", "labelled", "describe"]
