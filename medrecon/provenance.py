"""What made a result: the provenance block carried by every JSON file medrecon writes.

    {"medrecon_version", "git_revision", "git_dirty", "torch_version", "python_version",
     "device", "seed", "inputs": [{"path", "sha256", "files"?}], "prior": {"name", "path",
     "weights", "weights_sha256"} | None, "command", "date"}

``inputs`` hashes each input file (SHA-256 of its bytes); a directory (a DICOM series) is
hashed as the SHA-256 of the sorted lines ``"<relative path> <file sha256>"`` of its files.
``prior`` names the prior and hashes the weights file the run loaded. ``command`` is the
command line as typed (``medrecon`` plus its arguments); ``date`` is UTC, ISO 8601.

:func:`write_json` is the one writer of JSON outputs: it adds the block under ``"provenance"``
and writes atomically (:func:`medrecon.io.atomic.write_text_atomic`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def input_checksum(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "sha256"}`` of a file, or of a directory's files (plus ``"files"``: how many);
    ``{"path", "sha256": None, "missing": True}`` when the path does not exist."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "sha256": sha256_file(p)}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        lines = "".join(f"{f.relative_to(p).as_posix()} {sha256_file(f)}\n" for f in files)
        return {"path": str(p), "sha256": hashlib.sha256(lines.encode()).hexdigest(), "files": len(files)}
    return {"path": str(p), "sha256": None, "missing": True}


def prior_identity(name_or_path: Optional[str | os.PathLike], weights: str = "ema") -> Optional[dict[str, Any]]:
    """``{"name", "path", "weights", "weights_sha256"}`` of a shipped prior name or prior
    directory (None for None)."""
    if name_or_path is None or str(name_or_path) == "":
        return None
    from medrecon.prior.checkpoint import read_card, resolve

    directory = resolve(name_or_path)
    card = read_card(directory)
    file = (card.get("weights") or {}).get(weights)
    path = directory / file if file else None
    return {"name": card.get("name"), "path": str(directory), "weights": file,
            "weights_sha256": sha256_file(path) if path is not None and path.is_file() else None}


def git_revision(where: str | os.PathLike | None = None) -> tuple[Optional[str], Optional[bool]]:
    """``(commit, dirty)`` of the git checkout holding ``where`` (default: this package);
    ``(None, None)`` outside a checkout or without git."""
    cwd = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0 or not rev.stdout.strip():
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
        return rev.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def medrecon_version() -> str:
    from medrecon import __version__
    return __version__


def version_line() -> str:
    """``medrecon 0.1.0 (git abc1234, torch 2.x, Python 3.x)`` for ``medrecon --version``."""
    import torch

    rev, dirty = git_revision()
    git = f"git {rev[:12]}{'+dirty' if dirty else ''}" if rev else "not a git checkout"
    return (f"medrecon {medrecon_version()} ({git}, torch {torch.__version__}, "
            f"Python {platform.python_version()})")


def command_line(argv: Optional[Sequence[str]] = None, program: str = "medrecon") -> str:
    """The command line as a shell would take it: ``program`` (as given, e.g. ``"python
    scripts/x.py"``) and the quoted arguments (default: this process's ``sys.argv``)."""
    if argv is None:
        program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else program
        argv = sys.argv[1:]
    return " ".join([program, *(shlex.quote(str(a)) for a in argv)])


def provenance(*, device: Any = None, seed: Optional[int] = None,
               inputs: Iterable[str | os.PathLike] = (), prior: Optional[str | os.PathLike] = None,
               command: Optional[str] = None, extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The provenance block (module docstring). ``inputs``: files or folders the result was
    computed from; ``prior``: shipped prior name or prior directory; ``command``: the command
    line (default: :func:`command_line` of this process)."""
    import torch

    rev, dirty = git_revision()
    block: dict[str, Any] = {
        "medrecon_version": medrecon_version(),
        "git_revision": rev,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": None if device is None else str(device),
        "seed": None if seed is None else int(seed),
        "inputs": [input_checksum(p) for p in inputs if p is not None],
        "prior": prior_identity(prior),
        "command": command if command is not None else command_line(),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if extra:
        block.update(extra)
    return block


def write_json(path: str | os.PathLike, payload: Mapping[str, Any], provenance_block: Mapping[str, Any],
               overwrite: bool = False, what: str = "JSON output") -> Path:
    """Write ``payload`` plus ``{"provenance": provenance_block}`` as indented JSON, atomically
    (refuses an existing file unless ``overwrite``). Non-JSON values (paths, numpy scalars) are
    written as strings or numbers."""
    from medrecon.io.atomic import write_text_atomic

    doc = {**payload, "provenance": dict(provenance_block)}
    text = json.dumps(doc, indent=2, default=_jsonable) + "\n"
    return write_text_atomic(path, text, overwrite=overwrite, what=what)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


__all__ = ["sha256_file", "input_checksum", "prior_identity", "git_revision", "version_line",
           "command_line", "provenance", "write_json"]
