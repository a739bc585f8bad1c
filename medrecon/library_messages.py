"""Warnings and log records of the libraries medrecon uses, shown once, without tracebacks.

pydicom, nibabel, h5py, SigPy, MONAI and torch report problems through ``warnings.warn`` and
their own loggers, some with full tracebacks (pydicom logs one per failed decoder plugin before
medrecon's own one-line error says the same in a sentence). Inside :func:`captured`, every such
message is reduced to its first sentence, prefixed with the library's name, printed once (a
repeat is counted in :attr:`Collector.counts`, not printed) and its traceback dropped; ``verbose`` keeps the tracebacks.

Messages are held back while a command reads and checks its inputs: a command refused with a
one-line error prints that line alone (the library's complaint about the same file is in it).
They are printed when the work starts (:func:`release`, called by
:meth:`medrecon.io.outputs.OutputPlan.open`) or when the command ends without error.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, TextIO

LIBRARIES = ("pydicom", "nibabel", "h5py", "sigpy", "monai", "torch", "astra", "PIL",
             "matplotlib", "nrrd", "skimage", "safetensors")
_SEE = re.compile(r"\s*(please see|see)\s*<?https?://.*$", re.IGNORECASE)
_URL = re.compile(r"\s*<?https?://\S+>?")


def _library(module_or_logger: str) -> str:
    root = module_or_logger.split(".")[0]
    return root if root in LIBRARIES else module_or_logger


def plain(text: str) -> str:
    """First line of ``text`` without URLs, trailing punctuation trimmed."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    first = _URL.sub("", _SEE.sub("", lines[0] if lines else "")).strip()
    return first.rstrip(" .:;") or "(no message)"


@dataclass
class Collector:
    """Messages seen so far: ``{(library, text): count}``; ``emit`` prints a new one."""

    emit: Callable[[str, str], None]
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    holding: bool = True
    pending: list[tuple[str, str]] = field(default_factory=list)

    def add(self, library: str, text: str) -> None:
        key = (library, plain(text))
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if seen == 0:
            if self.holding:
                self.pending.append(key)
            else:
                self.emit(*key)

    def release(self) -> None:
        """Print what was held back; print new messages at once from now on."""
        self.holding = False
        pending, self.pending = self.pending, []
        for key in pending:
            self.emit(*key)

    def drop(self) -> None:
        """Forget what was held back (the command failed with its own one-line error)."""
        self.pending = []


class _Handler(logging.Handler):
    def __init__(self, collector: Collector, verbose: bool) -> None:
        super().__init__(logging.WARNING)
        self.collector, self.verbose = collector, verbose

    def emit(self, record: logging.LogRecord) -> None:
        self.collector.add(_library(record.name), record.getMessage())
        if self.verbose and record.exc_info:
            import traceback

            traceback.print_exception(*record.exc_info, file=sys.stderr)


def _writer(prog: str, stream: Optional[TextIO]) -> Callable[[str, str], None]:
    def emit(library: str, text: str) -> None:
        print(f"{prog}: warning: {library} reports: {text}", file=stream or sys.stderr)
    return emit


_ACTIVE: list[Collector] = []


def release() -> None:
    """Print the held-back messages of the active :func:`captured` block (the work starts)."""
    for collector in _ACTIVE:
        collector.release()


@contextlib.contextmanager
def captured(prog: str = "medrecon", verbose: bool = False,
             stream: Optional[TextIO] = None) -> Iterator[Collector]:
    """Within the block, route library warnings and WARNING+ log records to one line each
    (``<prog>: warning: <library> reports: <first sentence>``), printed once."""
    collector = Collector(_writer(prog, stream), holding=not verbose)
    handler = _Handler(collector, verbose)
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        module = getattr(category, "__module__", "") or ""
        source = filename.replace("\\", "/")
        found = next((lib for lib in LIBRARIES if f"/{lib}/" in source), None)
        collector.add(found or _library(module) or category.__name__, str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        _ACTIVE.append(collector)
        try:
            yield collector
            collector.release()
        except BaseException:
            collector.drop()
            raise
        finally:
            _ACTIVE.remove(collector)
            for lg, propagate in saved:
                lg.removeHandler(handler)
                lg.propagate = propagate


__all__ = ["captured", "release", "Collector", "plain", "LIBRARIES"]
