"""A sampler's resumable state in a directory (:class:`DirectoryStateStore`).

    STATE_DIR/state.json          format, step, what the run is (written last)
    STATE_DIR/state-<step>.pt     the tensors (read back with ``weights_only=True``: no code runs)
    STATE_DIR/<child>/...         child stores (posterior samples, z-slabs of a distributed run)

Both files are written atomically and the JSON last, so the pair on disk is always consistent;
older tensor files are removed after the JSON names the new one. A sampler running on the
directory holds its lock (:meth:`DirectoryStateStore.exclusive`): one run per state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

import torch

from medrecon.errors import DataError, UserError
from medrecon.io.atomic import atomic_path
from medrecon.io.outputs import hold_lock
from medrecon.samplers.state import STATE_FORMAT, StateStore, Tensors


class DirectoryStateStore(StateStore):
    """Atomic save/load of a sampler's state in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"state directory {self.dir} exists and is not a directory")
        self.json_path = self.dir / "state.json"

    @property
    def location(self) -> str:
        return str(self.dir)

    def exists(self) -> bool:
        return self.json_path.exists()

    def save(self, step: int, tensors: Tensors, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"state-{step:06d}.pt"
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        with atomic_path(self.dir / name, overwrite=True, what="sampler state") as tmp:
            torch.save(cpu, tmp)
        doc = {"format": STATE_FORMAT, "step": int(step), "tensors": name, **meta}
        with atomic_path(self.json_path, overwrite=True, what="sampler state") as tmp:
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        for old in self.dir.glob("state-*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def load(self) -> tuple[int, Tensors, dict]:
        try:
            doc = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"sampler state {self.json_path} is unreadable: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise DataError(f"sampler state {self.json_path} is not a {STATE_FORMAT} file")
        path = self.dir / str(doc.get("tensors", ""))
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a DataError for the user
            raise DataError(f"sampler state tensors {path} are unreadable: {exc}") from None
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise DataError(f"sampler state tensors {path} are not a dict of tensors")
        return int(doc["step"]), tensors, doc

    def child(self, name: str) -> "DirectoryStateStore":
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"a child store needs a plain name, got {name!r}")
        return DirectoryStateStore(self.dir / name)

    def children(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if (p / "state.json").is_file())

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the directory's lock (:func:`medrecon.io.outputs.hold_lock`): a second run on the
        same state directory is refused while this one runs."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with hold_lock(self.dir, "state directory"):
            yield
