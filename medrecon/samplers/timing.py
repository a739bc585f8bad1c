"""Wall time per phase of a sampler (network vs physics), synchronised on CUDA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Timer:
    """Accumulated wall time per named phase (seconds)."""

    device: torch.device
    totals: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str) -> "_Phase":
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        if self.timer.device.type == "cuda":
            torch.cuda.synchronize(self.timer.device)
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        if self.timer.device.type == "cuda":
            torch.cuda.synchronize(self.timer.device)
        t = self.timer.totals
        t[self.name] = t.get(self.name, 0.0) + time.perf_counter() - self.start
