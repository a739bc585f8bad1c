"""Reconstructions run by every rank of a slab-distributed group (and by one process alone).

:func:`slab_results` runs every case on rank ``rank`` of ``world`` (``world == 1``: the plain
single-process code, ``slab=None`` everywhere) and returns this rank's slices of each result.
Module-level so that spawned processes can import it (:func:`medrecon.distributed.local.run_local`).
"""

from __future__ import annotations

import numpy as np
import torch

from denoisers import GaussianMixtureDenoiser, template_set

N_SLICES = 7


def ct_measurement(size: int = 32, views: int = 8):
    from medrecon.phantoms import random_ellipsoids
    from medrecon.tasks import CTOptions, simulate
    from medrecon.volume import Volume

    vol = Volume.from_array(random_ellipsoids((N_SLICES, size, size), seed=11), modality="CT",
                            units="a.u.")
    return simulate(vol, "sparse-view-ct", ct=CTOptions(views=views))


def mri_measurement(per_slice_maps: bool):
    """Multi-coil MRI; with ``per_slice_maps`` the coil maps are ``[Z, C, Y, X]`` (an operator
    with a fixed number of slices, whose norm is taken over the whole volume)."""
    from medrecon.phantoms import random_ellipsoids
    from medrecon.tasks import MRIOptions, simulate
    from medrecon.volume import Volume

    vol = Volume.from_array(random_ellipsoids((N_SLICES, 24, 24), seed=12), modality="MR",
                            units="a.u.")
    m = simulate(vol, "cs-mri", mri=MRIOptions(acceleration=4, coils=4))
    if per_slice_maps:
        z = np.linspace(0.8, 1.2, N_SLICES, dtype=np.float32)[:, None, None, None]
        m.arrays["coil_maps"] = (m.arrays["coil_maps"][None] * z).astype(np.complex64)
    return m


def _local(m, slab):
    from medrecon.slab_driver import split_measurement
    from medrecon.tasks import build_operator, data_in_working_units

    part = m if slab is None else split_measurement(m, slab.lo, slab.hi)
    op = build_operator(part, backend="torch")
    return part, op, data_in_working_units(part, op)


def slab_results(rank: int, world: int, network: bool = False) -> dict:
    """``{"slices": [lo, hi], "results": {case: this rank's slab of the result}}``."""
    from medrecon.config import make_settings
    from medrecon.distributed.slab import Slab
    from medrecon.methods import run_method
    from medrecon.solvers.classical import tv_reconstruction
    from medrecon.samplers import dds, mbir
    from medrecon.samplers.run import reconstruct

    slab = Slab.of_group(N_SLICES) if world > 1 else None
    out: dict[str, torch.Tensor] = {}

    ct = ct_measurement()
    part, op, y = _local(ct, slab)
    for name, settings in (("fbp", None), ("sirt", {"iterations": 10}), ("cgls", {"iterations": 10}),
                           ("tv", {"iterations": 15}),
                           ("tv", {"iterations": 10, "axes": "z", "boundary": "circular"})):
        key = f"ct-{name}" + ("-z-circular" if settings and "axes" in settings else "")
        out[key] = run_method(part, name, settings, backend="torch", slab=slab)
    den = GaussianMixtureDenoiser(template_set(32), tau=0.05)
    out["ct-dds"] = dds(op, y, den, steps=5, seed=3, slab=slab).x
    tv10 = make_settings("tv", {"iterations": 10}, task=ct.task)
    warm = reconstruct("dds", op, y, den, None, steps=3, seed=1, start_sigma=0.3, slab=slab,
                       warm_start=lambda o, d: tv_reconstruction(o, d, tv10, slab=slab))
    out["ct-dds-warm-start"] = warm.x
    out["ct-mbir-chunk-norms-circular"] = mbir(op, y, den, steps=6, seed=2, corrector_norm="chunk",
                                                chunk=3, boundary="circular", slab=slab).x
    post = reconstruct("dds", op, y, den, None, steps=3, seed=4, samples=2, slab=slab)
    out["ct-dds-posterior-mean"], out["ct-dds-posterior-std"] = post.x, post.std
    # a slice-group prior (3 slices per group, a small seeded UNet): groups at slab borders are
    # computed by both ranks from the gathered batch, one group per network call
    out["ct-dds-slice-groups"] = dds(op, y, group_network(), steps=3, seed=7, z_spacing_mm=5.0,
                                     group_combine="tile", chunk=1, slab=slab).x
    # a centre-output group prior: every slice from its own (mirrored) group, one call per slice
    out["ct-dds-centre-output-groups"] = dds(op, y, group_network(centre_output=True), steps=3, seed=7,
                                             z_spacing_mm=5.0, chunk=1, slab=slab).x

    mri = mri_measurement(per_slice_maps=False)
    part, op, y = _local(mri, slab)
    for name, settings in (("zero-filled", None), ("sense", {"iterations": 10}),
                           ("cgls", {"iterations": 10}), ("tv", {"iterations": 10})):
        out[f"mri-{name}"] = run_method(part, name, settings, slab=slab)
    # a prior that normalises by the data: the percentile of the whole volume's SENSE image
    nden = GaussianMixtureDenoiser(template_set(24, with_zero=True), tau=0.05)
    nden.card = {"name": "normalised-test", "intensity": {
        "convention": "normalised", "window": [0.0, 1.0], "units": "normalised",
        "normalisation": {"method": "percentile", "percentile": 99.0, "target": 0.8}}}
    normalised = reconstruct("dds", op, y, nden, part, steps=3, seed=6, lam_rel=0.005,
                             rho_rel=0.01, slab=slab)
    out["mri-dds-normalised-prior"] = normalised.x
    out["mri-normalised-scale"] = torch.tensor([normalised.info["intensity_map"][1]]).repeat(
        hi_lo(slab)[1] - hi_lo(slab)[0])

    fixed = mri_measurement(per_slice_maps=True)
    part, op, y = _local(fixed, slab)
    out["mri-fixed-z-tv"] = run_method(part, "tv", {"iterations": 10}, slab=slab)
    mden = GaussianMixtureDenoiser(template_set(24, with_zero=True), tau=0.05)
    out["mri-fixed-z-dds"] = dds(op, y, mden, steps=4, seed=5, lam_rel=0.005, rho_rel=0.01,
                                 slab=slab).x

    if network:                                   # the shipped phantom prior (a real UNet)
        # one image per network call: the UNet's float32 arithmetic for an image depends on the
        # size of the batch it is evaluated in (not on the other images in it), and ranks hold
        # different numbers of slices
        big = ct_measurement(size=128)
        part, _, _ = _local(big, slab)
        out["ct128-dds-phantom-prior"] = run_method(part, "dds", {"prior": "phantom", "steps": 3,
                                                                  "seed": 1, "chunk": 1},
                                                    backend="torch", slab=slab)
    return {"slices": list(hi_lo(slab)), "results": {k: v.detach().cpu() for k, v in out.items()}}


def group_network(centre_output: bool = False):
    """A small slice-group prior (3 slices, seeded weights) for 32 x 32 slices; the
    centre-output one gets seeded non-zero weights everywhere (MONAI starts the output
    convolution at zero), so the neighbours it is given change its output."""
    from medrecon.prior.network import EDMUNetDenoiser, UNetConfig

    torch.manual_seed(0)
    net = EDMUNetDenoiser(UNetConfig(image_size=32, channels=(8, 8), attention_levels=(False, False),
                                     mid_attention=False, num_head_channels=8, norm_num_groups=4,
                                     slice_group=3, z_classes=10, centre_output=centre_output))
    if centre_output:
        with torch.no_grad():
            for param in net.parameters():
                param.add_(0.02 * torch.randn(param.shape))
    return net.eval().requires_grad_(False)


def hi_lo(slab) -> tuple[int, int]:
    """This rank's slices ``(lo, hi)``; all of them in one process."""
    return (slab.lo, slab.hi) if slab is not None else (0, N_SLICES)
