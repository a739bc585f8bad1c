"""The arithmetic a prior network runs in: ``precision`` = ``auto``, ``float32`` or ``bfloat16``.

``auto`` picks bf16 autocast where the device does bf16 matrix work fast, float32 elsewhere:

- CUDA: bf16 when ``torch.cuda.is_bf16_supported()``;
- CPU: bf16 when the processor has AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``), read
  from the CPU flags (``/proc/cpuinfo``); without them bf16 is emulated and slower than float32.

Only the network runs under autocast; data consistency, CG and TV stay float32 (the samplers
call the network inside :func:`network_autocast` and cast its output back).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Iterable, Optional

import torch

from medrecon.errors import UserError

PRECISIONS = ("auto", "float32", "bfloat16")
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty when unknown, e.g. off Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name (for benchmark tables); the platform's name when unknown."""
    import platform

    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Precision:
    """What a run's network computes in: ``setting`` as asked, ``dtype`` (None: float32) and
    ``reason`` (why ``auto`` chose it)."""

    setting: str
    dtype: Optional[torch.dtype]
    reason: str

    @property
    def name(self) -> str:
        return "bfloat16" if self.dtype == torch.bfloat16 else "float32"

    def record(self) -> dict:
        """For the run's config and metrics JSON."""
        return {"setting": self.setting, "network": self.name, "reason": self.reason}


def resolve_precision(setting: str, device: torch.device | str,
                      flags: Optional[Iterable[str]] = None) -> Precision:
    """The precision ``setting`` gives on ``device``; ``flags``: the CPU flags (read from
    ``/proc/cpuinfo`` when None; tests pass their own)."""
    if setting not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    dev = torch.device(device)
    if setting == "float32":
        return Precision(setting, None, "asked for")
    if setting == "bfloat16":
        return Precision(setting, torch.bfloat16, "asked for")
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(setting, torch.bfloat16, "CUDA device with bf16 support")
        return Precision(setting, None, "CUDA device without bf16 support")
    if dev.type == "cpu":
        have = set(cpu_flags() if flags is None else flags)
        fast = [f for f in FAST_BF16_CPU_FLAGS if f in have]
        if fast:
            return Precision(setting, torch.bfloat16, f"CPU with {', '.join(fast)}")
        return Precision(setting, None, "CPU without AMX or AVX-512 BF16 (bf16 would be emulated)")
    return Precision(setting, None, f"{dev.type} device")


def network_autocast(precision: Precision, device: torch.device | str) -> ContextManager:
    """Autocast for one network call (a no-op context in float32)."""
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=precision.dtype)
