"""Device selection: ``auto`` takes CUDA when torch sees a GPU, otherwise the CPU."""

from __future__ import annotations

import torch

from medrecon.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a torch device (refuses CUDA without a GPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: torch sees no CUDA GPU on this machine; use cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
