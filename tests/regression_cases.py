"""Shepp-Logan regression cases for every task and classical method.

Their golden PSNRs live in ``tests/data/goldens.json`` (see ``tests/golden_cases.py``);
``python scripts/regenerate_goldens.py --only NAME`` re-measures one. ``tests/test_regression_classical.py``
fails when a case moves by more than its tolerance, either way.
"""

from __future__ import annotations

from functools import lru_cache

from medrecon.io.measurements import Measurement
from medrecon.methods import run_method
from medrecon.metrics import psnr
from medrecon.phantoms import shepp_logan_3d
from medrecon.tasks import CTOptions, MRIOptions, simulate, to_volume_units
from medrecon.volume import Volume

SHAPE = (8, 64, 64)

# name -> (task, simulation options, method, settings)
CASES: dict[str, tuple[str, dict, str, dict]] = {
    "sv8-fbp": ("sparse-view-ct", {"views": 8}, "fbp", {}),
    "sv8-sirt": ("sparse-view-ct", {"views": 8}, "sirt", {"iterations": 100}),
    "sv8-cgls": ("sparse-view-ct", {"views": 8}, "cgls", {"iterations": 20}),
    "sv8-tv": ("sparse-view-ct", {"views": 8}, "tv", {}),
    "sv32-fan-fbp": ("sparse-view-ct", {"views": 32, "beam": "fan", "source_origin": 200.0,
                                        "origin_detector": 100.0}, "fbp", {}),
    "sv60-noisy-fbp": ("sparse-view-ct", {"views": 60, "i0": 1e5}, "fbp", {}),
    "la90-fbp": ("limited-angle-ct", {"wedge": 90.0}, "fbp", {}),
    "la90-sirt": ("limited-angle-ct", {"wedge": 90.0}, "sirt", {"iterations": 100}),
    "la90-cgls": ("limited-angle-ct", {"wedge": 90.0}, "cgls", {"iterations": 20}),
    "la90-tv": ("limited-angle-ct", {"wedge": 90.0}, "tv", {"iterations": 100}),
    "mri4-zero-filled": ("cs-mri", {"acceleration": 4.0}, "zero-filled", {}),
    "mri4-sense": ("cs-mri", {"acceleration": 4.0}, "sense", {}),
    "mri4-cgls": ("cs-mri", {"acceleration": 4.0}, "cgls", {}),
    "mri4-tv": ("cs-mri", {"acceleration": 4.0}, "tv", {"iterations": 50}),
    "mri8-poisson-sense": ("cs-mri", {"acceleration": 8.0, "mask": "poisson2d", "calib": 12, "sigma": 0.01},
                           "sense", {}),
}


@lru_cache(maxsize=None)
def phantom(contrast: str) -> Volume:
    return Volume.from_array(shepp_logan_3d(SHAPE, contrast=contrast), modality="CT" if contrast == "ct" else "MR")


def measurement(task: str, options: dict) -> tuple[Measurement, Volume]:
    volume = phantom("mr" if task == "cs-mri" else "ct")
    if task == "cs-mri":
        return simulate(volume, task, seed=0, mri=MRIOptions(**options)), volume
    return simulate(volume, task, seed=0, ct=CTOptions(**options)), volume


def measure(name: str) -> float:
    """PSNR (dB, data range 1) of case ``name`` against the phantom."""
    task, options, method, settings = CASES[name]
    m, volume = measurement(task, options)
    recon = to_volume_units(run_method(m, method, dict(settings)), m)
    return psnr(recon, volume.array, 1.0)
