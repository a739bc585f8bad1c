"""medrecon: 3D medical image reconstruction with 2D diffusion priors.

The Python API (:mod:`medrecon.api`), imported on first use so that ``import medrecon`` stays
cheap: :func:`load`, :func:`simulate`, :func:`reconstruct`, :func:`evaluate`, :func:`list_priors`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = ["__version__", "load", "simulate", "reconstruct", "evaluate", "list_priors"]
_API = ("load", "simulate", "reconstruct", "evaluate", "list_priors")


def __getattr__(name: str) -> Any:
    if name in _API:
        from medrecon import api
        return getattr(api, name)
    raise AttributeError(f"module 'medrecon' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
