"""Inference precision and memory-layout helpers for the published networks.

On CUDA the networks run under bf16 autocast (fp16 where bf16 is unsupported) with channels-last
tensors, which lets cuDNN use tensor-core convolutions; GroupNorm and softmax stay in float32
(GroupNorm by autocast's own policy and :class:`~medrecon.published.layers.GroupNorm32`, the
attention softmax explicitly). On the CPU everything stays float32 and contiguous, which is what
reproduces the published outputs to 1e-5.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch
from torch import nn


def _device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def autocast_dtype(device: torch.device | str) -> Optional[torch.dtype]:
    """The reduced precision used on ``device``: bf16 if the GPU supports it, else fp16; None off CUDA."""
    dev = _device(device)
    if dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device | str, dtype: Optional[torch.dtype] = None,
                     enabled: bool = True) -> ContextManager:
    """``torch.autocast`` for CUDA inference in bf16/fp16; a no-op context on CPU or when disabled."""
    dev = _device(device)
    if not enabled or dev.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype or autocast_dtype(dev))


def use_channels_last(device: torch.device | str) -> bool:
    """Channels-last pays off with cuDNN tensor-core convolutions; keep NCHW elsewhere."""
    return _device(device).type == "cuda"


def prepare_for_inference(net: nn.Module, device: torch.device | str,
                          channels_last: Optional[bool] = None) -> nn.Module:
    """Move ``net`` to ``device`` in eval mode, frozen; channels-last on CUDA (or when forced)."""
    net = net.to(_device(device)).eval().requires_grad_(False)
    if channels_last if channels_last is not None else use_channels_last(device):
        net = net.to(memory_format=torch.channels_last)
    return net
