"""Past one device: a volume's z-slabs over the processes of a ``torch.distributed`` group.

- :mod:`medrecon.distributed.slab`: :class:`~medrecon.distributed.slab.Slab`, one process's
  slices and the few collectives that couple slices (halo slices of ``D_z``, gathers).
- :mod:`medrecon.distributed.reduce`: ordered reductions, whole-volume scalars (inner products,
  norms) from per-slice partial values summed in slice order, in one process as on N.
  Solvers and samplers take ``slab=``; nothing else in them knows about processes.
- :mod:`medrecon.distributed.launch`: join the group started by ``torchrun`` or ``srun``.
- :mod:`medrecon.distributed.local`: N local CPU processes on gloo, for tests and benchmarks.

This package is the bottom floor: it imports nothing of medrecon but :mod:`medrecon.errors` and
:mod:`medrecon.device`. What drives a whole reconstruction over the group (rank 0 reads and
writes, every rank computes its slab, as ``medrecon reconstruct`` does under torchrun) lives
above, beside the commands: :mod:`medrecon.slab_driver`.
"""

from medrecon.distributed.slab import Slab, slab_bounds

__all__ = ["Slab", "slab_bounds"]
