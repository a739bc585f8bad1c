"""SENSE operator variants for the generic operator suite (small sizes, odd and even axes)."""

import numpy as np
import torch

from medrecon.physics.mri import SenseOperator, birdcage_maps, gaussian_1d, uniform_1d


def _random_maps(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=torch.complex64, generator=gen)


def _per_slice_masks(n_z: int, shape: tuple[int, int]) -> np.ndarray:
    return np.stack([uniform_1d(shape, 3.0, 0.1, seed=s).mask for s in range(n_z)])


CASES = {
    "mri-single-coil": lambda: SenseOperator.single_coil((16, 13), uniform_1d((16, 13), 2.0).mask),
    "mri-sense-4coil-shared-free-z": lambda: SenseOperator(
        birdcage_maps(4, (16, 12)), gaussian_1d((16, 12), 3.0, seed=1)),
    "mri-sense-per-slice-maps-fixed-z": lambda: SenseOperator(
        _random_maps((3, 4, 15, 12), 2), uniform_1d((15, 12), 2.5, seed=2).mask.astype(np.uint8)),
    "mri-sense-per-slice-masks": lambda: SenseOperator(
        birdcage_maps(3, (14, 11)), _per_slice_masks(3, (14, 11))),
}

# subset of an operator that holds per-slice data: slices 1..2 of 4 (maps and masks per slice)
CASES["mri-sense-per-slice-subset"] = lambda: SenseOperator(
    _random_maps((4, 3, 14, 11), 5), _per_slice_masks(4, (14, 11))).subset(slice(1, 3))
