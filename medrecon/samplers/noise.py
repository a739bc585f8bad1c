"""The samplers' random numbers: seeded standard normal noise, the same on every device and for
every number of processes.

Every random number comes from one CPU ``torch.Generator`` seeded by the caller; noise is drawn on
the CPU in float32 and then moved, so CPU and CUDA runs draw the same numbers. In a distributed
run (``slab``: a :class:`~medrecon.distributed.slab.Slab` with ``world > 1``) every rank draws the
*whole volume's* noise and keeps its own rows, so each slice gets the same numbers as in a single
process whatever the number of ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from medrecon.errors import UserError

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


class NoiseSource:
    """Seeded standard normal noise: drawn on the CPU (float32), then moved to ``device``.

    With a distributed ``slab`` the whole volume's noise is drawn (dim 0 of ``shape`` is the
    local number of rows, a whole number per slice) and this rank's rows are kept, so the numbers
    of a slice do not depend on the number of ranks (the cost: every rank draws the volume).
    """

    def __init__(self, seed: int, slab: Optional["Slab"] = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed!r}")
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.slab = slab if slab is not None and slab.distributed else None

    def normal(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
               period: int = 1, rows_per_slice: int = 1) -> torch.Tensor:
        """``N(0, 1)`` of ``shape`` (a real dtype) on ``device``. ``period > 1``: correlated
        across slices (:mod:`medrecon.samplers.slice_noise`; ``rows_per_slice`` rows of dim 0
        belong to one slice), defined on the whole volume as the independent noise is."""
        if period > 1:
            from medrecon.samplers.slice_noise import anchor_count, interpolate_anchors

            rows = self.slab.global_rows(shape[0]) if self.slab is not None else shape[0]
            n = rows // rows_per_slice
            anchors = torch.randn((anchor_count(n, period), rows_per_slice, *shape[1:]),
                                  generator=self.generator, dtype=torch.float32)
            full = interpolate_anchors(anchors, n, period)
            mine = self.slab.take(full, rows_per_slice).clone() if self.slab is not None else full
            return mine.to(device=device, dtype=dtype)
        if self.slab is None:
            z = torch.randn(shape, generator=self.generator, dtype=torch.float32)
            return z.to(device=device, dtype=dtype)
        rows = self.slab.global_rows(shape[0])
        full = torch.randn((rows, *shape[1:]), generator=self.generator, dtype=torch.float32)
        mine = self.slab.take(full, rows // self.slab.n).clone()
        del full
        return mine.to(device=device, dtype=dtype)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.to("cpu", torch.uint8))
