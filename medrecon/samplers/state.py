"""Where a sampler keeps its resumable state: a small store of tensors and a JSON-able document.

A sampler never opens files: it is handed a :class:`StateStore` and calls ``save``/``load``.
:class:`MemoryStateStore` keeps states in memory (tests, notebooks, in-process retries);
:class:`medrecon.io.sampler_state.DirectoryStateStore` writes them to a directory, atomically.

A store holds at most one state (the latest) and may have named children, each a store of its
own: the K runs of a posterior estimate use ``sample-000``, ``sample-001``, ...; the z-slabs of
a distributed run use ``rank-000-of-004``, ... (see :mod:`medrecon.samplers.loop`).

While a sampler runs on a store it holds :meth:`StateStore.exclusive`: a store that others can
reach (a directory) refuses a second run there; one in memory needs no lock.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from typing import Optional

import torch

STATE_FORMAT = "medrecon-sampler-state/1"
Tensors = dict[str, torch.Tensor]


class StateStore(ABC):
    """One saved sampler state (step, tensors, document) plus named child stores."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the state lives, for messages (a path, or ``memory:<name>``)."""

    @abstractmethod
    def exists(self) -> bool:
        """True when a state has been saved here."""

    @abstractmethod
    def save(self, step: int, tensors: Tensors, meta: dict) -> None:
        """Replace the state by ``tensors`` (moved to the CPU) after ``step`` steps; ``meta`` is
        JSON-serialisable. All or nothing: a failed save leaves the previous state."""

    @abstractmethod
    def load(self) -> tuple[int, Tensors, dict]:
        """``(step, tensors on the CPU, document)``; the document holds ``meta`` and
        ``format``/``step``. Raises :class:`~medrecon.errors.DataError` for a damaged state."""

    @abstractmethod
    def child(self, name: str) -> "StateStore":
        """The child store ``name`` (created on first save)."""

    @abstractmethod
    def children(self) -> list[str]:
        """Names of the children that hold a saved state, sorted."""

    def exclusive(self) -> AbstractContextManager:
        """A context in which this run alone uses the store (the sampler's step loop holds it);
        a store shared with other processes refuses a second run there. Default: no lock."""
        return nullcontext()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"


class MemoryStateStore(StateStore):
    """A :class:`StateStore` in memory (copies on save and load, so callers cannot alter it)."""

    def __init__(self, name: str = "state") -> None:
        self.name = name
        self._state: Optional[tuple[int, Tensors, dict]] = None
        self._children: dict[str, MemoryStateStore] = {}

    @property
    def location(self) -> str:
        return f"memory:{self.name}"

    def exists(self) -> bool:
        return self._state is not None

    def save(self, step: int, tensors: Tensors, meta: dict) -> None:
        cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        doc = {"format": STATE_FORMAT, "step": int(step), **copy.deepcopy(meta)}
        self._state = (int(step), cpu, doc)

    def load(self) -> tuple[int, Tensors, dict]:
        if self._state is None:
            raise FileNotFoundError(f"no sampler state in {self.location}")
        step, tensors, doc = self._state
        return step, {k: v.clone() for k, v in tensors.items()}, copy.deepcopy(doc)

    def child(self, name: str) -> "MemoryStateStore":
        if name not in self._children:
            self._children[name] = MemoryStateStore(f"{self.name}/{name}")
        return self._children[name]

    def children(self) -> list[str]:
        return sorted(k for k, v in self._children.items() if v.exists())
