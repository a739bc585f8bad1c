"""Benchmark medrecon's classical reconstructions against the tools users would otherwise use.

One command (from the repository root)::

    python benchmarks/classical.py            # 32 x 128 x 128 Shepp-Logan, all tasks
    python benchmarks/classical.py --quick    # 8 x 64 x 64

For every task (sparse-view CT with 8 views, noiseless and with I0 = 1e5 photons; limited-angle
CT, 90 degree wedge in 1 degree steps; multi-coil CS-MRI at x4 uniform 1D and x8 Poisson-disc 2D
with 8 coils) it simulates ONE measurement of a 3D Shepp-Logan volume with medrecon and
reconstructs that same measurement with

- medrecon: fbp / sirt / cgls / tv (CT), zero-filled / sense / tv (MRI), default settings;
- scikit-image ``iradon`` (FBP, same filter, slice by slice) on the sinogram converted to its
  conventions (see :func:`to_skimage_sinogram`);
- ASTRA's own SIRT and CGLS (``astra.OpTomo(...).reconstruct``, CPU projector ``"linear"``,
  same geometry and iteration counts; SIRT with ``MinConstraint = 0`` like medrecon's);
- SigPy's ``SenseRecon`` and ``TotalVariationRecon`` slice by slice (same maps, mask, k-space).

TV weights of medrecon and SigPy are both picked from the same small grid (multiples of
medrecon's default ``lam_rel`` times ``||A||^2``) by PSNR on a central slab of slices; the table
reports the full-volume run with the best weight. Metrics compare against the phantom in its own
units under medrecon's one convention (``medrecon.metrics``), which for these [0, 1] phantoms is
``data_range = 1`` on the values themselves. Results are printed and written to ``<output-dir>/<name>.md`` and
``<name>.json``. Every random choice is seeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:  # run from a clone without installing: make the package next to this script importable
    import medrecon  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the script is launched
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from medrecon.config import make_settings  # noqa: E402
from medrecon.errors import UserError  # noqa: E402
from medrecon.io.atomic import write_text_atomic  # noqa: E402
from medrecon.io.measurements import Measurement  # noqa: E402
from medrecon.methods import run_method  # noqa: E402
from medrecon.metrics import measurement_convention, score as metrics_score  # noqa: E402
from medrecon.phantoms import shepp_logan_3d  # noqa: E402
from medrecon.physics.ct import CTGeometry  # noqa: E402
from medrecon.physics.operator import operator_norm  # noqa: E402
from medrecon.tasks import CTOptions, MRIOptions, build_operator, data_in_working_units, simulate, \
    to_volume_units  # noqa: E402
from medrecon.volume import Volume  # noqa: E402

FORMAT = "medrecon-benchmark-classical/1"
DEFAULT_SHAPE = (32, 128, 128)
QUICK_SHAPE = (8, 64, 64)
SMOKE_SHAPE = (4, 32, 32)
DEFAULT_TV_FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
SMOKE_TV_FACTORS = (1.0,)
COLUMNS = ("task", "method", "implementation", "PSNR", "SSIM", "axial PSNR", "coronal PSNR",
           "sagittal PSNR", "seconds")
DATA_RANGE = 1.0


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One simulated measurement: ``key`` (short id), ``label`` (table text), task and options."""

    key: str
    label: str
    task: str
    ct: Optional[CTOptions] = None
    mri: Optional[MRIOptions] = None

    @property
    def is_ct(self) -> bool:
        return self.ct is not None


def make_cases(shape: Sequence[int], noisy: bool) -> list[Case]:
    """The benchmark's cases for a volume ``shape`` (the Poisson-disc calibration square shrinks
    with the image so that x8 stays reachable: ``min(24, Y // 4)``)."""
    ny = int(shape[1])
    cases = [Case("sv8", "sparse-view CT, 8 views", "sparse-view-ct", ct=CTOptions(views=8))]
    if noisy:
        cases.append(Case("sv8-i0", "sparse-view CT, 8 views, I0=1e5", "sparse-view-ct",
                          ct=CTOptions(views=8, i0=1e5)))
    cases += [
        Case("la90", "limited-angle CT, 90 deg wedge, 1 deg steps", "limited-angle-ct",
             ct=CTOptions(wedge=90.0, start=0.0, step=1.0)),
        Case("mri-x4", "CS-MRI x4 uniform1d, 8 coils", "cs-mri",
             mri=MRIOptions(acceleration=4.0, mask="uniform1d", coils=8)),
        Case("mri-x8", "CS-MRI x8 poisson2d, 8 coils", "cs-mri",
             mri=MRIOptions(acceleration=8.0, mask="poisson2d", coils=8, calib=min(24, ny // 4))),
    ]
    return cases


# ---------------------------------------------------------------------------------------------
# Conversions to the peers' conventions
# ---------------------------------------------------------------------------------------------
_SKIMAGE_FILTERS = {"ram-lak": "ramp", "ramp": "ramp", "shepp-logan": "shepp-logan",
                    "cosine": "cosine", "hamming": "hamming", "hann": "hann"}


def _check_skimage_geometry(g: CTGeometry) -> None:
    ny, nx = g.image_shape
    if g.beam != "parallel" or ny != nx or abs(g.detector_spacing - g.pixel_size) > 1e-9 * g.pixel_size:
        raise UserError("scikit-image iradon needs parallel beam, square slices and detector "
                        f"spacing = pixel size; got {g.beam}, {g.image_shape}, "
                        f"{g.detector_spacing} vs {g.pixel_size} mm")


def to_skimage_sinogram(sino: np.ndarray, g: CTGeometry) -> tuple[np.ndarray, np.ndarray, float]:
    """medrecon sinogram ``[A, D]`` (line integrals, mm x image units) -> what ``iradon`` expects.

    Returns ``(radon_image [L, A], theta_deg [A], weight)``. Conventions (derived from
    scikit-image 0.2x's ``radon``/``iradon`` source and checked on a dense scan by
    :func:`check_skimage_conversion`):

    - angles: the same angle in degrees (skimage's ``t = x cos(theta) + y sin(theta)`` with x to
      the right and y up, as medrecon's detector axis ``e_u``);
    - ``circle=False`` layout: ``L = ceil(sqrt(2) N)`` bins, bin ``i`` at ``t = i - L // 2``
      pixels from skimage's rotation centre, pixel ``(N // 2, N // 2)``. medrecon's centre is the
      middle of the image, ``d = N // 2 - (N - 1) / 2`` pixels away in x and -y, so every view is
      resampled (linear interpolation) at ``s = p (t + d (cos - sin))``;
    - values: line integrals in pixel units (divide by the pixel size ``p`` in mm);
    - ``weight``: iradon scales by ``pi / (2 A)``, which assumes A views spread over 180 degrees;
      for a wedge the factor ``A dtheta / pi`` restores the angular step (1 for sparse view).
    """
    _check_skimage_geometry(g)
    n = g.image_shape[1]
    p = g.pixel_size
    length = int(math.ceil(math.sqrt(2.0) * n))
    d = n // 2 - (n - 1) / 2
    theta = g.angles_array
    t = np.arange(length) - length // 2
    s_med = g.detector_positions()
    out = np.empty((length, theta.size), dtype=np.float64)
    for a, th in enumerate(theta):
        s = p * (t + d * (math.cos(th) - math.sin(th)))
        out[:, a] = np.interp(s, s_med, np.asarray(sino[a], np.float64), left=0.0, right=0.0) / p
    steps = np.diff(np.sort(theta))
    dtheta = float(np.median(steps)) if steps.size else math.pi
    weight = 1.0 if theta.size < 2 else theta.size * dtheta / math.pi
    return out, np.rad2deg(theta), weight


def skimage_fbp(sino: np.ndarray, g: CTGeometry, filter_name: str) -> np.ndarray:
    """``iradon`` slice by slice on a medrecon sinogram stack ``[Z, A, D]`` -> ``[Z, N, N]``."""
    from skimage.transform import iradon

    if filter_name not in _SKIMAGE_FILTERS:
        raise UserError(f"no scikit-image equivalent of FBP filter {filter_name!r}")
    n = g.image_shape[1]
    out = np.empty((sino.shape[0], n, n), dtype=np.float32)
    for z in range(sino.shape[0]):
        radon_image, theta, weight = to_skimage_sinogram(sino[z], g)
        out[z] = weight * iradon(radon_image, theta=theta, output_size=n,
                                 filter_name=_SKIMAGE_FILTERS[filter_name], interpolation="linear",
                                 circle=False, preserve_range=True)
    return out


def astra_optomo(g: CTGeometry, projector: str = "linear") -> Any:
    """``astra.OpTomo`` (scipy LinearOperator) for one slice of ``g`` (parallel beam, CPU)."""
    import astra

    if g.beam != "parallel":
        raise UserError("the ASTRA peer is set up for parallel beam only")
    ny, nx = g.image_shape
    hx, hy = nx * g.pixel_size / 2, ny * g.pixel_size / 2
    vol = astra.create_vol_geom(ny, nx, -hx, hx, -hy, hy)
    proj = astra.create_proj_geom("parallel", g.detector_spacing, g.n_detectors, g.angles_array)
    return astra.OpTomo(astra.create_projector(projector, proj, vol))


def astra_reconstruct(sino: np.ndarray, g: CTGeometry, method: str, iterations: int,
                      options: Optional[dict] = None) -> tuple[np.ndarray, list[int]]:
    """ASTRA's own ``method`` ("SIRT" or "CGLS") slice by slice through ``OpTomo.reconstruct``.

    Returns ``(images [Z, Y, X], zero_slices)``. ASTRA's CGLS returns NaN for an all-zero
    sinogram (0 / 0 step size; e.g. slices beyond the object): such slices are set to 0, the
    exact answer, and listed in ``zero_slices``. Any other non-finite output is kept as is.
    """
    import astra

    op = astra_optomo(g)
    out = np.empty((sino.shape[0], *g.image_shape), dtype=np.float32)
    zero_slices = []
    try:
        for z in range(sino.shape[0]):
            out[z] = op.reconstruct(method, np.ascontiguousarray(sino[z], np.float32), iterations,
                                    dict(options or {}))
            if not np.all(np.isfinite(out[z])) and not np.any(sino[z]):
                out[z] = 0.0
                zero_slices.append(z)
    finally:
        astra.projector.delete(op.proj_id)
    return out, zero_slices


def sigpy_recon(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, kind: str,
                **kwargs: Any) -> np.ndarray:
    """SigPy ``SenseRecon`` (kind "sense") or ``TotalVariationRecon`` ("tv") slice by slice.

    ``kspace`` ``[Z, C, ky, kx]`` in centred k-space, ``maps`` ``[C, Y, X]``, ``mask`` ``[ky, kx]``
    (SigPy's ``sp.fft(center=True)`` is the same orthonormal centred FFT as medrecon's, and its
    ``weights`` multiply the data term, so a 0/1 mask is the sampling pattern).
    """
    from sigpy.mri import app

    cls = {"sense": app.SenseRecon, "tv": app.TotalVariationRecon}[kind]
    weights = mask.astype(np.float32)
    out = np.empty((kspace.shape[0], *maps.shape[1:]), dtype=np.complex64)
    for z in range(kspace.shape[0]):
        out[z] = cls(np.ascontiguousarray(kspace[z]), maps, weights=weights, show_pbar=False,
                     **kwargs).run()
    return out


# ---------------------------------------------------------------------------------------------
# Convention checks (recorded with the results)
# ---------------------------------------------------------------------------------------------
def check_skimage_conversion(n: int, views: int = 360, filter_name: str = "hann") -> dict:
    """On one phantom slice and a dense scan (``views`` over 180 degrees): the converted medrecon
    sinogram against ``skimage.transform.radon``, and ``iradon`` of it against the phantom and
    against medrecon's own FBP of the same sinogram."""
    from skimage.transform import radon

    from medrecon.physics import ct
    from medrecon.solvers.fbp import fbp

    img = shepp_logan_3d((1, n, n))[0]
    g = ct.parallel_geometry((n, n), ct.sparse_view_angles(views))
    op = ct.make_ct_operator(g)
    sino = op.forward(torch.from_numpy(img)[None])
    converted, theta, _ = to_skimage_sinogram(sino[0].numpy(), g)
    reference = radon(img.astype(np.float64), theta=theta, circle=False)
    rel = float(np.linalg.norm(converted - reference) / np.linalg.norm(reference))
    sk = skimage_fbp(sino.numpy(), g, filter_name)[0]
    med = fbp(sino, g, filter=filter_name).numpy()[0]
    from medrecon.metrics import psnr
    # wrong conventions for contrast: angles mirrored (theta -> -theta)
    mirrored = radon(img.astype(np.float64), theta=-theta, circle=False)
    rel_mirrored = float(np.linalg.norm(converted - mirrored) / np.linalg.norm(reference))
    return {"slice": [n, n], "views": views, "filter": filter_name,
            "sinogram_rel_diff_vs_skimage_radon": rel,
            "sinogram_rel_diff_if_angles_mirrored": rel_mirrored,
            "iradon_psnr_vs_phantom": psnr(sk, img, DATA_RANGE),
            "medrecon_fbp_psnr_vs_phantom": psnr(med, img, DATA_RANGE),
            "iradon_vs_medrecon_fbp_psnr": psnr(sk, med, DATA_RANGE)}


def check_astra_projector(m: Measurement) -> dict:
    """``OpTomo.FP`` of the central working-unit slice against medrecon's simulated data (noiseless)."""
    g = CTGeometry.from_dict(m.geometry)
    z = m.data.shape[0] // 2
    w = np.asarray(m.arrays["reference"][z], np.float32)   # a.u. phantom = working units
    op = astra_optomo(g)
    try:
        fp = np.asarray(op.FP(w)).reshape(g.sinogram_shape)
    finally:
        import astra
        astra.projector.delete(op.proj_id)
    data = np.asarray(m.data[z], np.float64) / float(m.attrs["scale"])
    return {"slice": z, "fp_rel_diff_vs_medrecon_data": float(np.linalg.norm(fp - data) / np.linalg.norm(data))}


def check_sigpy_operator(m: Measurement) -> dict:
    """``sigpy.mri.linop.Sense`` (with the mask as weights) of the central slice against the data."""
    import sigpy.mri as mr

    z = m.data.shape[0] // 2
    scale = float(m.attrs["scale"])
    img = np.asarray(m.arrays["reference"][z], np.complex64) / scale
    maps = np.asarray(m.arrays["coil_maps"], np.complex64)
    k = mr.linop.Sense(maps, weights=np.asarray(m.arrays["mask"], np.float32)) * img
    data = np.asarray(m.data[z]) / scale
    return {"slice": z, "sense_rel_diff_vs_medrecon_data": float(np.linalg.norm(k - data) / np.linalg.norm(data))}


# ---------------------------------------------------------------------------------------------
# Running and scoring
# ---------------------------------------------------------------------------------------------
def slab(m: Measurement, sl: slice) -> Measurement:
    """The same measurement restricted to slices ``sl`` (identical data, no re-simulation)."""
    arrays = {k: (v[sl] if k == "reference" else v) for k, v in m.arrays.items()}
    return Measurement(task=m.task, data=m.data[sl], geometry=m.geometry, arrays=arrays,
                       attrs=m.attrs)


def score(w: torch.Tensor | np.ndarray, m: Measurement) -> dict:
    """Metrics of a working-unit reconstruction in the phantom's units under medrecon's one
    convention (:func:`medrecon.metrics.measurement_convention`): for these phantoms, both in
    [0, 1], that is data range 1 (:data:`DATA_RANGE`) on the values themselves."""
    reference = np.asarray(m.arrays["reference"])
    return metrics_score(to_volume_units(w, m), reference, measurement_convention(m, reference))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@dataclass
class Runner:
    """Runs the methods of one case; ``backend`` and ``device`` are medrecon's."""

    device: str = "cpu"
    backend: str = "auto"
    tv_factors: tuple[float, ...] = DEFAULT_TV_FACTORS
    grid_slices: int = 8
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))

    # medrecon ---------------------------------------------------------------------------------
    def medrecon(self, m: Measurement, method: str, settings: Optional[dict] = None) -> tuple[Any, float]:
        def go() -> np.ndarray:
            w = run_method(m, method, settings, device=self.device, backend=self.backend)
            return w.detach().cpu().numpy()
        return timed(go)

    # grid search for the TV weights ----------------------------------------------------------
    def grid_slab(self, m: Measurement) -> slice:
        z = m.data.shape[0]
        n = z if self.grid_slices <= 0 else min(self.grid_slices, z)
        z0 = (z - n) // 2
        return slice(z0, z0 + n)

    def tuned(self, m: Measurement, run: Callable[[Measurement, float], np.ndarray],
              values: Sequence[float]) -> tuple[dict, np.ndarray, float]:
        """Pick the value of ``run(measurement, value)`` with the best PSNR on the central slab,
        then run it on the whole volume. Returns ``(grid summary, image, seconds)``; when the
        slab is the whole volume the grid's own run is the result (nothing is recomputed)."""
        sl = self.grid_slab(m)
        whole = sl.stop - sl.start == m.data.shape[0]
        sub = m if whole else slab(m, sl)
        results, total, best_run = [], 0.0, None
        for v in values:
            w, sec = timed(lambda: run(sub, v))
            total += sec
            results.append({"value": float(v), "psnr": score(w, sub)["psnr"], "seconds": sec})
            if whole and (best_run is None or results[-1]["psnr"] > best_run[0]):
                best_run = (results[-1]["psnr"], w, sec)
        best = max(range(len(values)), key=lambda i: results[i]["psnr"])
        summary = {"slab": [sl.start, sl.stop], "results": results, "best": results[best]["value"],
                   "best_at_edge": len(values) > 1 and best in (0, len(values) - 1),
                   "seconds": total}
        if whole:
            return summary, best_run[1], best_run[2]
        w, sec = timed(lambda: run(m, summary["best"]))
        return summary, w, sec


def _row(case: Case, method: str, impl: str, metrics: dict, seconds: float, settings: dict,
         note: str = "") -> dict:
    return {"case": case.key, "task": case.label, "method": method, "implementation": impl,
            "psnr": metrics["psnr"], "ssim": metrics["ssim"],
            "planes": {p: dict(v) for p, v in metrics["planes"].items()},
            "seconds": seconds, "settings": settings, "note": note}


def run_ct_case(case: Case, m: Measurement, r: Runner) -> tuple[list[dict], dict]:
    g = CTGeometry.from_dict(m.geometry)
    rows, info = [], {}
    fbp_s, sirt_s, cgls_s, tv_s = (make_settings(k, None, task=m.task) for k in ("fbp", "sirt", "cgls", "tv"))
    op = build_operator(m, device=r.device, backend=r.backend)
    y = data_in_working_units(m, op, r.device).cpu().numpy()   # what every peer reconstructs from
    info["medrecon_ct_backend"] = f"{op.backend}/{op.projector_kind}"

    for method, s in (("fbp", fbp_s), ("sirt", sirt_s), ("cgls", cgls_s)):
        w, sec = r.medrecon(m, method)
        rows.append(_row(case, method, "medrecon", score(w, m), sec, dataclasses.asdict(s)))
        r.log(f"  {case.key} medrecon {method}: {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")

    norm2 = operator_norm(op.subset(slice(0, 1))) ** 2
    lam_grid = [tv_s.lam_rel * f for f in r.tv_factors]
    info["tv_default_lam_rel"] = tv_s.lam_rel
    info["tv_grid_medrecon"], w, sec = r.tuned(
        m, lambda sub, v: r.medrecon(sub, "tv", {"lam_rel": v})[0], lam_grid)
    best = info["tv_grid_medrecon"]["best"]
    tv_settings = dataclasses.asdict(tv_s) | {"lam_rel": best, "lam": best * norm2}
    rows.append(_row(case, "tv", "medrecon", score(w, m), sec, tv_settings,
                     _grid_note(info["tv_grid_medrecon"], "lam_rel")))
    r.log(f"  {case.key} medrecon tv (lam_rel={best:g}): {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")

    w, sec = timed(lambda: skimage_fbp(y, g, fbp_s.filter))
    _, _, weight = to_skimage_sinogram(y[0], g)
    rows.append(_row(case, "fbp", "skimage", score(w, m), sec,
                     {"filter": _SKIMAGE_FILTERS[fbp_s.filter], "circle": False,
                      "interpolation": "linear", "angular_weight": weight}))
    r.log(f"  {case.key} skimage fbp: {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")

    sirt_opts = {"MinConstraint": 0.0} if sirt_s.nonnegative else {}
    for method, iters, opts in (("sirt", sirt_s.iterations, sirt_opts), ("cgls", cgls_s.iterations, {})):
        (w, zeroed), sec = timed(lambda: astra_reconstruct(y, g, method.upper(), iters, opts))
        note = (f"ASTRA returned NaN on the all-zero sinograms of slices {zeroed} (outside the "
                f"object); set to 0" if zeroed else "")
        rows.append(_row(case, method, "astra", score(w, m), sec,
                         {"iterations": iters, "projector": "linear", "options": opts}, note))
        r.log(f"  {case.key} astra {method}: {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")
    if m.attrs.get("options", {}).get("i0") is None:
        info["astra_projector_check"] = check_astra_projector(m)
    info["tv_norm2"] = norm2
    return rows, info


def run_mri_case(case: Case, m: Measurement, r: Runner) -> tuple[list[dict], dict]:
    rows, info = [], {}
    sense_s, tv_s = (make_settings(k, None, task=m.task) for k in ("sense", "tv"))
    op = build_operator(m, device=r.device, backend=r.backend)
    y = data_in_working_units(m, op, r.device).cpu().numpy()
    maps = np.asarray(m.arrays["coil_maps"], np.complex64)
    mask = np.asarray(m.arrays["mask"]).astype(bool)

    for method, s in (("zero-filled", {}), ("sense", dataclasses.asdict(sense_s))):
        w, sec = r.medrecon(m, method)
        rows.append(_row(case, method, "medrecon", score(w, m), sec, s))
        r.log(f"  {case.key} medrecon {method}: {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")

    norm2 = operator_norm(op.subset(slice(0, 1))) ** 2
    lam_grid = [tv_s.lam_rel * f for f in r.tv_factors]
    info["tv_default_lam_rel"] = tv_s.lam_rel
    info["tv_grid_medrecon"], w, sec = r.tuned(
        m, lambda sub, v: r.medrecon(sub, "tv", {"lam_rel": v})[0], lam_grid)
    best = info["tv_grid_medrecon"]["best"]
    rows.append(_row(case, "tv", "medrecon", score(w, m), sec,
                     dataclasses.asdict(tv_s) | {"lam_rel": best, "lam": best * norm2},
                     _grid_note(info["tv_grid_medrecon"], "lam_rel")))
    r.log(f"  {case.key} medrecon tv (lam_rel={best:g}): {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")

    w, sec = timed(lambda: sigpy_recon(y, maps, mask, "sense", lamda=sense_s.l2,
                                       max_iter=sense_s.iterations))
    rows.append(_row(case, "sense", "sigpy", score(w, m), sec,
                     {"lamda": sense_s.l2, "max_iter": sense_s.iterations, "solver": "CG"}))
    r.log(f"  {case.key} sigpy sense: {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")

    # PDHG applies A and A^H once per iteration; medrecon's ADMM applies A^H A (cg_iterations + 1)
    # times per iteration (CG start residual + CG steps): match the operator applications.
    pdhg_iters = tv_s.iterations * (tv_s.cg_iterations + 1)

    def sigpy_tv(sub: Measurement, lamda: float) -> np.ndarray:
        y_sub = data_in_working_units(sub, op, r.device).cpu().numpy()
        return sigpy_recon(y_sub, maps, mask, "tv", lamda=lamda, max_iter=pdhg_iters)

    info["tv_grid_sigpy"], w, sec = r.tuned(m, sigpy_tv, [v * norm2 for v in lam_grid])
    best = info["tv_grid_sigpy"]["best"]
    rows.append(_row(case, "tv", "sigpy", score(w, m), sec,
                     {"lamda": best, "max_iter": pdhg_iters, "solver": "PDHG",
                      "tv": "2D anisotropic, per slice"}, _grid_note(info["tv_grid_sigpy"], "lamda")))
    r.log(f"  {case.key} sigpy tv (lamda={best:g}): {rows[-1]['psnr']:.2f} dB, {sec:.1f} s")
    info["sigpy_operator_check"] = check_sigpy_operator(m)
    info["tv_norm2"] = norm2
    return rows, info


def _grid_note(grid: dict, name: str) -> str:
    note = f"{name} = {grid['best']:.3g} (best of {len(grid['results'])} on slices {grid['slab'][0]}-{grid['slab'][1] - 1})"
    return note + " at grid edge" if grid["best_at_edge"] else note


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def _fmt(v: float, digits: int) -> str:
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def table_cells(row: dict) -> list[str]:
    """The table cells of one row, in :data:`COLUMNS` order (the markdown and the print agree)."""
    p = row["planes"]
    return [row["task"], row["method"], row["implementation"], _fmt(row["psnr"], 2),
            _fmt(row["ssim"], 3), _fmt(p["axial"]["psnr"], 2), _fmt(p["coronal"]["psnr"], 2),
            _fmt(p["sagittal"]["psnr"], 2), _fmt(row["seconds"], 2)]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + "|"]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    fmt = lambda c: "  ".join(x.ljust(w) if i < 3 else x.rjust(w)  # noqa: E731
                              for i, (x, w) in enumerate(zip(c, widths)))
    return "\n".join([fmt(cells[0]), "-" * len(fmt(cells[0]))] + [fmt(c) for c in cells[1:]])


def markdown(result: dict) -> str:
    o, env = result["options"], result["environment"]
    used = sorted({i["medrecon_ct_backend"] for i in result["cases"].values() if "medrecon_ct_backend" in i})
    out = ["# Classical reconstruction benchmark", "",
           "Command (from the repository root):", "", "```", result["command"], "```", "",
           f"3D Shepp-Logan phantom {'x'.join(map(str, o['shape']))} (Z x Y x X, 1 mm voxels; CT "
           f"contrast for CT, MR contrast for MRI), seed {o['seed']}. Metrics in the phantom's units "
           f"with data range 1; axial/coronal/sagittal PSNR are means over the 2D slices of that plane "
           f"(`medrecon.metrics.plane_metrics`; per-plane SSIM in the JSON). "
           f"Seconds: wall time of the reconstruction only (same process, shared CPU; "
           f"{env['cpu_count']} cores, torch threads {env['torch_threads']}), medrecon on `{o['device']}` "
           f"with CT backend `{o['backend']}`" + (f" (= `{', '.join(used)}`)" if used else "") + ".", "",
           markdown_table(result["rows"]), "", "## Notes on rows", ""]
    out += [f"- {r['task']} / {r['method']} / {r['implementation']}: {r['note']}"
            for r in result["rows"] if r.get("note")]
    out += ["", "## How the peers were run", "",
           "- **skimage**: `skimage.transform.iradon(..., filter_name=<medrecon's FBP filter>, "
           "circle=False)` slice by slice on the same sinogram, resampled to skimage's detector "
           "centre and divided by the pixel size; for a wedge the result is multiplied by "
           "`A dtheta / pi` (iradon assumes A views over 180 degrees).",
           "- **astra**: `astra.OpTomo(projector).reconstruct('SIRT' | 'CGLS', sinogram, "
           "iterations)` slice by slice, CPU projector `linear`, same geometry and iteration "
           "counts as medrecon; SIRT with `MinConstraint = 0` (medrecon's SIRT clips at 0).",
           "- **sigpy**: `sigpy.mri.app.SenseRecon` / `TotalVariationRecon` slice by slice with "
           "the same coil maps, the mask as `weights`, the same k-space, `show_pbar=False`; SENSE "
           "with the same CG iterations and l2 weight; TV (2D anisotropic, circular differences, "
           "PDHG) with as many applications of A and A^H as medrecon's ADMM-TV: iterations x "
           "(cg_iterations + 1) PDHG iterations (100 x 6 = 600 with the defaults).",
           f"- **TV weights**: medrecon `lam_rel` and SigPy `lamda = lam_rel ||A||^2` both from the "
           f"grid {o['tv_factors']} x medrecon's default lam_rel for the task (other TV settings: "
           f"medrecon's task defaults), chosen by PSNR on the central "
           f"{o['grid_slices'] or 'all'} slices of the same measurement; the table reports the "
           f"full-volume run with the chosen weight.", "", "## TV grids", ""]
    for key, info in result["cases"].items():
        for impl in ("medrecon", "sigpy"):
            grid = info.get(f"tv_grid_{impl}")
            if grid:
                vals = ", ".join(f"{g['value']:.3g}: {g['psnr']:.2f} dB" for g in grid["results"])
                out.append(f"- {key} {impl} (default lam_rel {info['tv_default_lam_rel']:.3g}): "
                           f"{vals} -> {grid['best']:.3g}"
                           + (" (at grid edge)" if grid["best_at_edge"] else "")
                           + f"; grid time {grid['seconds']:.1f} s")
    out += ["", "## Convention checks", ""]
    sk = result.get("checks", {}).get("skimage")
    if sk:
        out.append(f"- skimage conversion, one {sk['slice'][0]}x{sk['slice'][1]} slice, {sk['views']} "
                   f"views over 180 deg: converted sinogram vs `skimage.transform.radon` relative "
                   f"difference {sk['sinogram_rel_diff_vs_skimage_radon']:.4f} (angles mirrored: "
                   f"{sk['sinogram_rel_diff_if_angles_mirrored']:.3f}); iradon {sk['iradon_psnr_vs_phantom']:.2f} dB "
                   f"and medrecon fbp {sk['medrecon_fbp_psnr_vs_phantom']:.2f} dB vs the phantom, "
                   f"{sk['iradon_vs_medrecon_fbp_psnr']:.2f} dB between them.")
    for key, info in result["cases"].items():
        if "astra_projector_check" in info:
            out.append(f"- {key}: `OpTomo.FP` vs medrecon's simulated sinogram, relative difference "
                       f"{info['astra_projector_check']['fp_rel_diff_vs_medrecon_data']:.2e}")
        if "sigpy_operator_check" in info:
            out.append(f"- {key}: `sigpy.mri.linop.Sense` vs medrecon's simulated k-space, relative "
                       f"difference {info['sigpy_operator_check']['sense_rel_diff_vs_medrecon_data']:.2e}")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    out += ["", f"Generated {result['generated']} ({versions}, Python {env['python']}); total "
                f"{result['total_seconds']:.0f} s.", ""]
    return "\n".join(out)


def environment(device: str) -> dict:
    import astra
    import scipy
    import sigpy
    import skimage

    import medrecon as mr
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
            "versions": {"medrecon": getattr(mr, "__version__", "?"), "torch": torch.__version__,
                         "numpy": np.__version__, "scipy": scipy.__version__,
                         "scikit-image": skimage.__version__, "astra": astra.__version__,
                         "sigpy": sigpy.__version__}}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/classical.py",
        description="medrecon's classical reconstructions vs scikit-image, ASTRA and SigPy on a "
                    "3D Shepp-Logan volume: prints a table and writes <name>.md and <name>.json.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                      help=f"phantom size (default {' '.join(map(str, DEFAULT_SHAPE))}); Y = X required")
    size.add_argument("--quick", action="store_true",
                      help=f"{'x'.join(map(str, QUICK_SHAPE))} phantom (a few minutes)")
    size.add_argument("--smoke", action="store_true",
                      help=f"smallest configuration, a plumbing check used by the tests: "
                           f"{'x'.join(map(str, SMOKE_SHAPE))} phantom and only medrecon's default TV "
                           f"weight (grid {SMOKE_TV_FACTORS}); its numbers are not meaningful")
    p.add_argument("--output-dir", type=Path, default=REPO / "benchmarks" / "results",
                   help="where <name>.md and <name>.json go (default benchmarks/results)")
    p.add_argument("--name", default="classical", help="output file stem (default classical)")
    p.add_argument("--seed", type=int, default=0, help="seed of masks and noise (default 0)")
    p.add_argument("--no-noisy", action="store_true",
                   help="skip the noisy sparse-view CT case (I0 = 1e5)")
    p.add_argument("--cases", nargs="+", metavar="CASE",
                   help="run only these cases: sv8, sv8-i0, la90, mri-x4, mri-x8 (default all)")
    p.add_argument("--tv-grid", type=str, default=None,
                   help="comma-separated multiples of medrecon's default TV lam_rel tried for "
                        f"medrecon and SigPy (default {','.join(map(str, DEFAULT_TV_FACTORS))})")
    p.add_argument("--grid-slices", type=int, default=8,
                   help="central slices on which the TV weight is chosen (0: whole volume; default 8)")
    p.add_argument("--backend", choices=("auto", "astra", "torch"), default="auto",
                   help="medrecon's CT projector backend (default auto, what users get; the one "
                        "used is recorded with the results)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the peers run single-threaded, and on "
                        "a shared CPU torch's thread pool contends; 0 keeps torch's default)")
    p.add_argument("--device", default="cpu", help="torch device of medrecon's runs (default cpu)")
    return p.parse_args(argv)


def _options(a: argparse.Namespace) -> dict:
    shape = SMOKE_SHAPE if a.smoke else QUICK_SHAPE if a.quick else tuple(a.shape or DEFAULT_SHAPE)
    if shape[1] != shape[2] or min(shape) < 1:
        raise UserError(f"--shape: need positive sizes with Y = X (square slices), got {shape}")
    if a.tv_grid is not None:
        try:
            factors = tuple(float(v) for v in a.tv_grid.split(",") if v.strip())
        except ValueError:
            raise UserError(f"--tv-grid: expected comma-separated numbers, got {a.tv_grid!r}") from None
        if not factors or any(not (f > 0 and math.isfinite(f)) for f in factors):
            raise UserError(f"--tv-grid: need positive numbers, got {a.tv_grid!r}")
    else:
        factors = SMOKE_TV_FACTORS if a.smoke else DEFAULT_TV_FACTORS
    if a.threads < 0:
        raise UserError(f"--threads must be >= 0, got {a.threads}")
    if a.grid_slices < 0:
        raise UserError(f"--grid-slices must be >= 0, got {a.grid_slices}")
    return {"shape": list(shape), "seed": a.seed, "noisy": not a.no_noisy, "cases": a.cases,
            "tv_factors": list(factors), "grid_slices": a.grid_slices, "backend": a.backend, "threads": a.threads,
            "device": a.device}


def run(o: dict, command: str, log: Callable[[str], None]) -> dict:
    """Run the benchmark with options ``o`` (see :func:`_options`); returns the result dict."""
    start = time.perf_counter()
    if o["threads"]:
        torch.set_num_threads(o["threads"])
    cases = make_cases(o["shape"], o["noisy"])
    if o["cases"]:
        known = {c.key for c in make_cases(o["shape"], True)}
        unknown = set(o["cases"]) - known
        if unknown:
            raise UserError(f"--cases: unknown {sorted(unknown)}; choose from {sorted(known)}")
        cases = [c for c in make_cases(o["shape"], True) if c.key in o["cases"]]
    runner = Runner(device=o["device"], backend=o["backend"], tv_factors=tuple(o["tv_factors"]),
                    grid_slices=o["grid_slices"], log=log)
    rows, infos, checks = [], {}, {}
    if any(c.is_ct for c in cases):
        checks["skimage"] = check_skimage_conversion(o["shape"][1],
                                                     filter_name=make_settings("fbp", None).filter)
        log(f"skimage conversion check: {checks['skimage']}")
    phantoms = {}
    for case in cases:
        contrast = "ct" if case.is_ct else "mr"
        if contrast not in phantoms:
            phantoms[contrast] = Volume.from_array(shepp_logan_3d(o["shape"], contrast=contrast),
                                                   modality="CT" if case.is_ct else "MR")
        log(f"{case.key}: {case.label}")
        m = simulate(phantoms[contrast], case.task, seed=o["seed"], ct=case.ct, mri=case.mri,
                     device=o["device"])
        case_rows, info = (run_ct_case if case.is_ct else run_mri_case)(case, m, runner)
        info["measurement"] = {"task": case.task, "data_shape": list(m.data.shape),
                               "options": m.attrs.get("options"),
                               **({"acceleration": m.attrs["acceleration"]} if not case.is_ct else {})}
        rows += case_rows
        infos[case.key] = info
    return {"format": FORMAT, "command": command, "options": o, "environment": environment(o["device"]),
            "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "columns": list(COLUMNS), "rows": rows, "cases": infos, "checks": checks,
            "total_seconds": time.perf_counter() - start}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        a = parse_args(args_list)
        o = _options(a)
        command = shlex.join(["python", "benchmarks/classical.py", *args_list])
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        result = run(o, command, log)
        out_dir = Path(a.output_dir)
        write_text_atomic(out_dir / f"{a.name}.json", json.dumps(result, indent=1) + "\n", overwrite=True)
        write_text_atomic(out_dir / f"{a.name}.md", markdown(result), overwrite=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"$ {command}\n")
    print(text_table(result["rows"]))
    print(f"\nwrote {out_dir / (a.name + '.md')} and {out_dir / (a.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
