"""Outputs of a run: checked before any work, locked, written aside, committed all or none.

A command declares what it reads and what it will write, then does its work inside
:meth:`OutputPlan.open`::

    plan = OutputPlan(overwrite=args.overwrite)
    plan.add_input(args.input)                        # never written, never written into
    nifti = plan.add_file(args.output, "--output")
    config = plan.add_file(stem + ".config.json", "config")
    dicom = plan.add_dir(args.dicom_out, "--dicom-out", accept=medrecon_dicom_only)
    with plan.open() as staged:                       # every check happens here, before work
        ... compute ...
        save_volume(volume, staged.path(nifti))       # writes into a staging folder
        write_json(staged.path(config), effective)
    # leaving the block normally moves every output into place (the whole set, or none of it);
    # an exception discards what was staged and removes folders the plan created.

What :meth:`OutputPlan.open` checks (each failure is a one-line :class:`UserError`):

- the folder an output goes into exists or can be created: no part of its path is a file, and
  the nearest existing folder is writable;
- an output is none of the inputs (compared after resolving symlinks, ``..`` and the working
  directory), lies inside no input folder and no folder of input DICOM files, and contains
  no input; outputs are distinct and do not nest;
- an existing output is only replaced with ``overwrite``, and is of the same kind (file /
  folder; a replaced folder must hold only what ``accept`` allows);
- no other medrecon run holds the output (one lock per output, see :func:`hold_lock`).

Files are created with mode ``0666 & ~umask`` and folders ``0777 & ~umask``, as ordinary tools
do. Temporary names are ``.<name>.medrecon-<token>...`` beside the output; a run killed with
SIGKILL leaves them behind and the next run that locks that output removes them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from medrecon.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not serialised
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("medrecon.io.outputs")

MARK = ".medrecon-"            # every temporary, staging and lock name carries it
LOCK_SUFFIX = MARK + "lock"
_NON_DICOM_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".h5", ".hdf5", ".json", ".yaml",
                       ".yml", ".png", ".txt", ".pt", ".safetensors", ".npz", ".npy")


# --------------------------------------------------------------------------------------------
# Paths and names
# --------------------------------------------------------------------------------------------
def real_path(path: str | os.PathLike) -> Path:
    """Absolute path with symlinks, ``..`` and the working directory resolved (a missing tail
    is kept as written)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies beneath it (both resolved)."""
    return path == folder or folder in path.parents


def temp_name(target_name: str, suffix: str = "") -> str:
    """A fresh hidden name beside ``target_name``: ``.<name>.medrecon-<token>.tmp<suffix>``."""
    return f".{target_name}{MARK}{secrets.token_hex(4)}.tmp{suffix}"


def target_suffix(name: str) -> str:
    """The suffix a library dispatches on (``.nii.gz`` kept whole)."""
    lower = name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if lower.endswith(double):
            return name[-len(double):]
    return Path(name).suffix


def new_temp_file(target: Path) -> Path:
    """Create an empty temporary file beside ``target`` (mode ``0666 & ~umask``)."""
    for _ in range(100):
        tmp = target.parent / temp_name(target.name, target_suffix(target.name))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise OSError(f"cannot create a temporary file beside {target}")


def new_temp_dir(target: Path) -> Path:
    """Create an empty temporary folder beside ``target`` (mode ``0777 & ~umask``)."""
    for _ in range(100):
        tmp = target.parent / temp_name(target.name)
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        return tmp
    raise OSError(f"cannot create a temporary folder beside {target}")


def stale_temporaries(target: Path) -> list[Path]:
    """Temporary files and folders left beside ``target`` by medrecon runs (not the lock)."""
    parent = target.parent
    if not parent.is_dir():
        return []
    prefix = f".{target.name}{MARK}"
    return sorted(p for p in parent.iterdir()
                  if p.name.startswith(prefix) and p.name != f".{target.name}{LOCK_SUFFIX}")


def remove_path(path: Path) -> None:
    """Remove a file, a symlink or a folder tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale(target: Path) -> int:
    """Remove what :func:`stale_temporaries` finds, inside ``target`` too when it is a folder
    (call only while holding ``target``'s lock); returns how many were removed."""
    found = stale_temporaries(target)
    if target.is_dir():
        found += sorted(p for p in target.iterdir()
                        if p.name.startswith(".") and MARK in p.name
                        and not p.name.endswith(LOCK_SUFFIX))
    for p in found:
        remove_path(p)
    if found:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(found),
                 ", ".join(str(p) for p in found[:4]))
    return len(found)


# --------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------
@dataclass
class _Held:
    fd: int
    path: Path
    count: int = 1


_HELD: dict[Path, _Held] = {}
_HELD_GUARD = threading.Lock()


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def _owner(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""


def acquire_lock(target: str | os.PathLike, what: str, timeout: float = 0.0) -> Path:
    """Take the lock of ``target`` (a file or folder that need not exist; its parent must):
    an advisory ``flock`` on ``.<name>.medrecon-lock`` beside it. Another process holding it
    makes this wait up to ``timeout`` seconds, then raise :class:`UserError`. Re-entrant
    within a process. Returns the resolved target."""
    real = real_path(target)
    path = lock_path(real)
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is not None:
            held.count += 1
            return real
    if fcntl is None:  # pragma: no cover
        return real
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"{what} {target}: cannot create the lock file {path}: "
                            f"{exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise UserError(f"{what} {target} is in use by another medrecon run{_owner(path)}; "
                            f"wait for it to finish or choose another path") from None
        # the holder before us may have removed the file after we opened it: lock the live one
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
    with _HELD_GUARD:
        _HELD[path] = _Held(fd, path)
    return real


def release_lock(target: str | os.PathLike) -> None:
    """Release a lock taken with :func:`acquire_lock` (the lock file is removed first, while
    still locked, so no waiting run can lock a file that is about to vanish)."""
    path = lock_path(real_path(target))
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[path]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(held.fd)


@contextlib.contextmanager
def hold_lock(target: str | os.PathLike, what: str, timeout: float = 0.0,
              clean: bool = True) -> Iterator[Path]:
    """Context manager around :func:`acquire_lock` / :func:`release_lock`; with ``clean``
    also removes temporaries of interrupted runs (:func:`clean_stale`). Yields the resolved
    target."""
    real = acquire_lock(target, what, timeout)
    try:
        if clean:
            clean_stale(real)
        yield real
    finally:
        release_lock(target)


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------
@dataclass
class Output:
    """One planned output. ``kind``: "file", "dir" (written aside, moved into place) or
    "workdir" (checked and locked, written in place: e.g. a sampler state folder)."""

    path: Path                    # as the user gave it
    real: Path                    # resolved
    what: str                     # how the user named it, e.g. "--output"
    kind: str
    accept: Optional[Callable[[Path], Optional[str]]] = None

    @property
    def label(self) -> str:
        return f"{self.what} {self.path}"


@dataclass
class Input:
    path: Path
    real: Path
    what: str
    tree: bool                    # a folder: nothing may be written inside it
    study: Optional[Path] = None  # folder of a DICOM file: nothing may be written inside it


def _looks_dicom_file(path: Path) -> bool:
    name = path.name.lower()
    if any(name.endswith(s) for s in _NON_DICOM_SUFFIXES):
        return False
    from medrecon.io.dicom_reader import is_dicom_file

    return name.endswith((".dcm", ".dicom", ".ima")) or is_dicom_file(path)


@dataclass
class OutputPlan:
    """What a run reads and writes; see the module docstring."""

    overwrite: bool = False
    outputs: list[Output] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)

    def add_input(self, path: Optional[str | os.PathLike], what: str = "input") -> None:
        """Something the run reads (file or folder; a missing path is ignored). A folder is
        protected as a whole; a DICOM file protects its folder (a series is loaded by folder)."""
        if path is None or str(path) == "":
            return
        p = Path(path)
        if not p.exists():
            return
        real = real_path(p)
        tree = real.is_dir()
        study = real.parent if (not tree and _looks_dicom_file(real)) else None
        self.inputs.append(Input(p, real, what, tree, study))

    def add_inputs(self, paths: Sequence[str | os.PathLike], what: str = "input") -> None:
        for p in paths:
            self.add_input(p, what)

    def _add(self, path: str | os.PathLike, what: str, kind: str,
             accept: Optional[Callable[[Path], Optional[str]]] = None) -> Output:
        if str(path) == "":
            raise UserError(f"{what}: empty path")
        out = Output(Path(path), real_path(path), what, kind, accept)
        self.outputs.append(out)
        return out

    def add_file(self, path: str | os.PathLike, what: str = "output") -> Output:
        """A file written at commit (stage it with ``staged.path(output)``)."""
        return self._add(path, what, "file")

    def add_dir(self, path: str | os.PathLike, what: str = "output folder",
                accept: Optional[Callable[[Path], Optional[str]]] = None) -> Output:
        """A folder written aside and moved into place at commit. An existing non-empty folder
        is replaced only with ``overwrite`` and when ``accept(file)`` returns None for every
        file in it (else the returned reason is the error)."""
        return self._add(path, what, "dir", accept)

    def add_workdir(self, path: str | os.PathLike, what: str = "work folder") -> Output:
        """A folder written in place during the run (checked and locked; may exist)."""
        return self._add(path, what, "workdir")

    # -- checks --------------------------------------------------------------------------------
    def _check_paths(self) -> list[Path]:
        """Everything that needs no lock; returns the parent folders that must be created."""
        seen: dict[Path, Output] = {}
        for o in self.outputs:
            if o.real in seen:
                raise UserError(f"{o.label} and {seen[o.real].label} are the same path")
            seen[o.real] = o
        for a in self.outputs:
            for b in self.outputs:
                if a is not b and b.kind != "file" and b.real in a.real.parents:
                    raise UserError(f"{a.label} lies inside {b.label}; choose separate paths")
        for o in self.outputs:
            for i in self.inputs:
                if o.real == i.real:
                    raise UserError(f"{o.label} is the input {i.what} {i.path}; an output may "
                                    f"never replace an input")
        for o in self.outputs:
            for i in self.inputs:
                if i.tree and inside(o.real, i.real):
                    raise UserError(f"{o.label} lies inside the input folder {i.path} "
                                    f"({i.what}); write outputs outside your input data")
                if i.study is not None and inside(o.real, i.study):
                    raise UserError(f"{o.label} lies inside {i.study}, the folder of the input "
                                    f"DICOM file {i.path}; write outputs outside your input "
                                    f"data")
                if o.kind != "file" and inside(i.real, o.real):
                    raise UserError(f"{o.label} contains the input {i.what} {i.path}; choose "
                                    f"a separate folder")
        to_create: list[Path] = []
        self._creator: dict[Path, str] = {}
        for o in self.outputs:
            parent = o.real.parent
            missing: list[Path] = []
            while not parent.exists() and not parent.is_symlink():
                missing.append(parent)
                parent = parent.parent
            if not parent.is_dir():
                raise UserError(f"{o.label}: cannot create it, {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{o.label}: the folder {parent} is not writable")
            for m in reversed(missing):
                if m not in to_create:
                    to_create.append(m)
                    self._creator[m] = o.label
        return to_create

    def _check_existing(self) -> None:
        for o in self.outputs:
            p = o.real
            if not (p.exists() or p.is_symlink()):
                continue
            if o.kind == "file":
                if p.is_dir():
                    raise UserError(f"{o.label} is a folder; expected a file name")
                if not self.overwrite:
                    raise UserError(f"{o.label} already exists; pass --overwrite to replace it")
                if not os.access(p.parent, os.W_OK):
                    raise UserError(f"{o.label}: the folder {p.parent} is not writable")
                continue
            if not p.is_dir():
                raise UserError(f"{o.label} exists and is not a folder")
            if o.kind == "workdir":
                if not os.access(p, os.W_OK | os.X_OK):
                    raise UserError(f"{o.label}: the folder is not writable")
                continue
            entries = [e for e in p.iterdir()]
            if entries and not self.overwrite:
                raise UserError(f"{o.label} is not empty; pass --overwrite to replace a previous "
                                f"medrecon output there")
            if o.accept is not None:
                for f in sorted(q for q in p.rglob("*") if not q.is_dir()):
                    why = o.accept(f)
                    if why:
                        raise UserError(f"{o.label} holds {f}, {why}; --overwrite only replaces "
                                        f"a folder medrecon wrote. Choose an empty folder")

    def check(self) -> None:
        """Every check of :meth:`open` that needs no lock (call it first thing, so that a bad
        output is refused before slow input is read; :meth:`open` checks again)."""
        self._check_paths()
        self._check_existing()

    @contextlib.contextmanager
    def open(self, lock_timeout: float = 0.0) -> Iterator["Staging"]:
        """Check every output, lock them, remove stale temporaries; yield a :class:`Staging`
        and commit it when the block ends without error (see the module docstring)."""
        to_create = self._check_paths()
        created: list[Path] = []
        locked: list[Output] = []
        staging = Staging(self)
        try:
            from medrecon.library_messages import release
            release()          # the inputs were read and checked: held-back library warnings are news now
            for folder in to_create:
                try:
                    os.mkdir(folder, 0o777)
                except OSError as exc:
                    raise UserError(f"{self._creator.get(folder, 'output')}: cannot create the folder "
                                    f"{folder} ({exc.strerror or exc})") from None
                created.append(folder)
            for o in sorted(self.outputs, key=lambda o: str(o.real)):
                acquire_lock(o.real, o.what, lock_timeout)
                locked.append(o)
            self._check_existing()
            for o in self.outputs:
                if o.kind == "workdir":
                    clean_stale(o.real)
                else:
                    for p in stale_temporaries(o.real):
                        remove_path(p)
            yield staging
            staging.commit()
        except BaseException:
            staging.discard()
            while locked:
                release_lock(locked.pop().real)
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when still empty
            raise
        finally:
            while locked:
                release_lock(locked.pop().real)


class Staging:
    """Where a run writes its outputs before they are committed (see :class:`OutputPlan`)."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self.folders: dict[int, Path] = {}

    def path(self, output: Output) -> Path:
        """The path to write ``output`` to now (in a hidden staging folder beside the target;
        a workdir is written in place)."""
        if output not in self.plan.outputs:
            raise ValueError(f"{output.label} is not part of this plan")
        if output.kind == "workdir":
            return output.path
        folder = self.folders.get(id(output))
        if folder is None:
            folder = self.folders[id(output)] = new_temp_dir(output.real)
        return folder / output.real.name

    def commit(self) -> None:
        """Move every staged output into place; on any failure restore what was there."""
        pending = [o for o in self.plan.outputs if o.kind != "workdir"]
        missing = [o.label for o in pending if not self.path(o).exists()]
        if missing:
            raise RuntimeError(f"planned outputs were not written: {', '.join(missing)}")
        done: list[tuple[Output, Optional[Path]]] = []
        try:
            for o in pending:
                backup: Optional[Path] = None
                linked = False
                if o.real.exists() or o.real.is_symlink():
                    backup = o.real.parent / temp_name(o.real.name, ".old")
                    if o.kind == "file" and not o.real.is_symlink():
                        try:
                            os.link(o.real, backup)  # the old file stays in place until replaced
                            linked = True
                        except OSError:
                            os.rename(o.real, backup)
                    else:
                        os.rename(o.real, backup)
                try:
                    os.replace(self.path(o), o.real)
                except BaseException:
                    if backup is not None and linked:  # not replaced: drop the extra link
                        _quietly(remove_path, backup)
                    elif backup is not None:  # moved aside: put it back
                        _quietly(os.replace, backup, o.real)
                    raise
                done.append((o, backup))
        except BaseException:
            for o, backup in reversed(done):  # best effort: restore every replaced output
                if backup is not None:
                    if o.kind == "dir":
                        _quietly(remove_path, o.real)
                    _quietly(os.replace, backup, o.real)
                else:
                    _quietly(remove_path, o.real)
            raise
        for _, backup in done:
            if backup is not None:
                remove_path(backup)
        self.discard()

    def discard(self) -> None:
        """Remove the staging folders (and whatever is left in them)."""
        for folder in self.folders.values():
            remove_path(folder)
        self.folders.clear()


def _quietly(fn: Callable, *args: object) -> None:
    """Run a clean-up step; a failure is logged, not raised (an error is already on its way)."""
    try:
        fn(*args)
    except OSError as exc:
        log.error("could not restore %s: %s", args[-1], exc)


__all__ = ["OutputPlan", "Output", "Staging", "hold_lock", "acquire_lock", "release_lock",
           "clean_stale", "stale_temporaries", "new_temp_file", "new_temp_dir", "real_path",
           "inside", "temp_name", "MARK"]
