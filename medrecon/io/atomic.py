"""Atomic file output: write to a temporary file beside the target, then ``os.replace``.

A crash or an error mid-write never leaves a half-written file under the final name, and an
existing file is only replaced when the caller asked for it. The temporary file is created
with mode ``0666 & ~umask`` (what the target gets), under a name that marks it as medrecon's
(``.<name>.medrecon-<token>.tmp<suffix>``, see :mod:`medrecon.io.outputs`), so a run killed
before the rename leaves something the next run can recognise and remove.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from medrecon.errors import UserError
from medrecon.io.outputs import new_temp_file


def check_writable(path: Path, overwrite: bool, what: str = "output file") -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; refuse a directory; return the path."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, expected a file path")
    if path.exists() and not overwrite:
        raise UserError(f"{what} {path} already exists; pass overwrite (--overwrite) to replace it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what} {path}: cannot create it, {parent} is a file, not a "
                                f"folder")
            break
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False,
                what: str = "output file") -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success rename it onto ``path``.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.h5``) so libraries that
    dispatch on the extension write the right format. On error the temporary file is removed.
    """
    path = check_writable(Path(path), overwrite, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(path)
    except PermissionError:
        raise UserError(f"{what} {path}: the folder is not writable") from None
    try:
        yield tmp
        if not overwrite and path.exists():  # appeared while we were writing
            raise UserError(f"{what} {path} appeared while writing; not replaced")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False,
                      what: str = "output file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path, overwrite=overwrite, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
