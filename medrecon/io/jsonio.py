"""Standard JSON out: writing JSON files (the text itself is :mod:`medrecon.jsontext`, re-exported
here for the IO layer).

JSON has no NaN or Infinity: a non-finite float becomes ``null``, NumPy scalars and arrays become
numbers and lists, paths become strings, and anything else that JSON cannot hold is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medrecon.jsontext import json_text, to_jsonable


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False,
               what: str = "JSON file", indent: int | None = 2) -> Path:
    """Write ``obj`` as standard JSON to ``path`` atomically; refuses an existing file unless
    ``overwrite``."""
    from medrecon.io.atomic import write_text_atomic

    return write_text_atomic(path, json_text(obj, indent=indent), overwrite=overwrite, what=what)


__all__ = ["to_jsonable", "json_text", "write_json"]
