"""Standard JSON text: the one way medrecon turns data into JSON (no file is touched here; the
IO layer writes files with :func:`medrecon.io.jsonio.write_json`).

JSON has no NaN or Infinity. Python's ``json`` writes them as the bare tokens ``NaN`` and
``Infinity``, which strict parsers (JavaScript, jq, most other languages) refuse. Here a
non-finite float becomes ``null``, NumPy scalars and arrays become numbers and lists, paths
become strings, and anything else that JSON cannot hold is an error (never a silent ``str``).
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any, Callable, Optional

import numpy as np


def to_jsonable(obj: Any, default: Optional[Callable[[Any], Any]] = None) -> Any:
    """``obj`` with every value JSON can hold in standard form (non-finite floats -> None).
    ``default`` converts anything else (as in :func:`json.dumps`); without it, such a value is
    a TypeError."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, default) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), default)
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return to_jsonable(obj.detach().cpu().tolist(), default)
    if default is not None:
        return to_jsonable(default(obj))
    raise TypeError(f"{type(obj).__name__} value {obj!r:.80} cannot be written as JSON")


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = False,
              default: Optional[Callable[[Any], Any]] = None) -> str:
    """Standard JSON text of ``obj`` (see :func:`to_jsonable`), ending in a newline when
    indented."""
    text = json.dumps(to_jsonable(obj, default), indent=indent, sort_keys=sort_keys,
                      allow_nan=False)
    return text + "\n" if indent is not None else text


__all__ = ["to_jsonable", "json_text"]
