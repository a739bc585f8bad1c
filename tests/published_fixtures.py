"""The published-network fixtures (tests/data/published): tiny configs, reference inputs and
outputs built with the authors' code, and the recorded state-dict keys of the full networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data" / "published"
TOL = 1e-5
CONFIG_KEY = {"ncsnpp": "architecture", "adm": "create_model_kwargs"}


def tiny_config(fmt: str) -> dict:
    """The tiny network's configuration of ``fmt`` ("ncsnpp" | "adm")."""
    return json.loads((DATA / f"{fmt}_tiny_config.json").read_text())[CONFIG_KEY[fmt]]


def tiny_io(fmt: str) -> dict[str, torch.Tensor]:
    """Reference inputs and outputs of the tiny network, recorded with the published code."""
    return {k: torch.from_numpy(v) for k, v in np.load(DATA / f"{fmt}_tiny_io.npz").items()}


def recorded_keys(name: str, strip_prefix: str = "") -> list[tuple[str, list[int], str]]:
    """``(key, shape, dtype)`` rows of a recorded key file (``#`` comments skipped)."""
    rows = []
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key.removeprefix(strip_prefix), json.loads(shape), dtype))
    return rows
