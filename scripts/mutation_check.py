"""Check that the test suite catches one-line bugs in the samplers, solvers, readers and the rest.

Each mutation replaces one line of medrecon's source in a scratch copy of the repository (the
working tree is never touched) and runs the listed default-suite tests there; the mutation is
*caught* when at least one of them fails. The report names the failing tests.

    python scripts/mutation_check.py                     # every mutation
    python scripts/mutation_check.py --only dds-eps-sign warm-start-no-noise
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --json mutations.json

Exit status 1 when a mutation is not caught, 2 when a mutation no longer applies (its line
changed: update the pattern here). Run with ``OMP_NUM_THREADS=1 nice -n 10`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SAMPLER_TESTS = ("tests/test_sampler_trajectories.py", "tests/test_samplers_dds.py",
                 "tests/test_samplers_mbir.py", "tests/test_samplers_posterior.py",
                 "tests/test_sampler_resume.py", "tests/test_samplers_published.py")
SOLVER_TESTS = ("tests/test_solvers.py", "tests/test_operator_contract.py") + SAMPLER_TESTS
DICOM_TESTS = ("tests/test_dicom_reader.py", "tests/test_dicom_bundled.py")
CT_TESTS = ("tests/test_ct.py", "tests/test_operator_contract.py")
CLI_TESTS = ("tests/test_cli_paths.py",)
ANY_SIZE_TESTS = ("tests/test_any_size.py",)
# issue 23: slabs and launch, metrics, NRRD, output plans, units, training, the prior-fit check
SPLIT_TESTS = ("tests/test_distributed.py::test_split_measurement_cuts_per_slice_arrays_only",
               "tests/test_distributed.py::test_split_measurement_of_a_sinogram")
LAUNCH_TESTS = tuple(f"tests/test_distributed_cli.py::{t}" for t in (
    "test_launch_environment", "test_torchrun_rank_world_and_local_rank_come_from_their_own_variables",
    "test_srun_rank_world_and_local_rank_come_from_their_own_variables",
    "test_srun_rendezvous_address_and_port", "test_join_under_srun_exports_the_torchrun_variables",
    "test_each_cuda_rank_takes_the_gpu_of_its_local_rank"))
METRICS_TESTS = ("tests/test_metrics.py",)
NRRD_TESTS = ("tests/test_nrrd.py",)
OUTPUTS_TESTS = ("tests/test_outputs.py",)
UNITS_TESTS = ("tests/test_units.py",)
TRAIN_TESTS = tuple(f"tests/test_prior_training.py::{t}" for t in (
    "test_ema_is_the_lerp_of_the_trained_weights", "test_validation_loss_scores_the_ema_weights",
    "test_edm_loss_is_the_weighted_denoising_error", "test_two_steps_are_clipped_adamw_on_the_edm_loss",
    "test_resume_equals_uninterrupted"))
FIT_TESTS = ("tests/test_samplers_prior_fit.py",)


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str          # file under the repository root
    old: str           # exact text, must occur once
    new: str
    tests: tuple[str, ...]
    why: str


MUTATIONS = [
    # -- the four of issue 15 --------------------------------------------------------------
    Mutation("dds-eps-sign", "medrecon/samplers/dds.py",
             "eps = (xr - x0r) / sigma", "eps = (x0r - xr) / sigma", SAMPLER_TESTS,
             "DDS re-noises with -eps"),
    Mutation("warm-start-no-noise", "medrecon/samplers/dds.py",
             "x = to_prior_batch(x_start) + draw() * sigmas[0]",
             "x = to_prior_batch(x_start)", SAMPLER_TESTS,
             "the warm start drops sigma_0 n"),
    Mutation("warm-start-split-zero", "medrecon/samplers/dds.py",
             'return {"x": x, **dc.initial_state(x_start),',
             'return {"x": x, **dc.initial_state(None),', SAMPLER_TESTS,
             "the warm start resets the ADMM split to z = 0"),
    Mutation("dicom-per-frame-slope", "medrecon/io/dicom_reader.py",
             'slope = get("PixelValueTransformationSequence", "RescaleSlope")',
             'slope = _first(shared, "PixelValueTransformationSequence", "RescaleSlope")',
             DICOM_TESTS, "an enhanced multi-frame file's per-frame slope is ignored"),
    # -- more, in the samplers and solvers -------------------------------------------------
    Mutation("ddim-eta-weight", "medrecon/samplers/dds.py",
             "out = x0 + (sigma_next * math.sqrt(1.0 - eta * eta)) * eps",
             "out = x0 + (sigma_next * math.sqrt(1.0 - eta)) * eps", SAMPLER_TESTS,
             "sqrt(1 - eta) instead of sqrt(1 - eta^2)"),
    Mutation("ddim-noise-without-eta", "medrecon/samplers/dds.py",
             "out = out + (sigma_next * eta) * z", "out = out + sigma_next * z", SAMPLER_TESTS,
             "fresh noise not weighted by eta"),
    Mutation("dds-cold-start-scale", "medrecon/samplers/dds.py",
             "x = draw() * math.sqrt(1.0 + sigmas[0] ** 2)",
             "x = draw() * sigmas[0]", SAMPLER_TESTS,
             "the VP N(0, I) start scaled as VE"),
    Mutation("dds-2d-dc-drops-anchor", "medrecon/samplers/dds.py",
             "rhs = self.aty + w * x0 if w > 0 else self.aty", "rhs = self.aty", SAMPLER_TESTS,
             "proximal data consistency without the Tweedie anchor"),
    Mutation("mbir-predictor-noise-scale", "medrecon/samplers/mbir.py",
             "x_p = x_p + math.sqrt(g2) * zp", "x_p = x_p + g2 * zp", SAMPLER_TESTS,
             "predictor noise g^2 instead of g"),
    Mutation("mbir-corrector-stale-score", "medrecon/samplers/mbir.py",
             'score_c = prior_chunked(denoiser, x_p, s, cfg.chunk, kind="score",',
             'score_c = prior_chunked(denoiser, x_in, s, cfg.chunk, kind="score",', SAMPLER_TESTS,
             "corrector uses the score before the predictor"),
    Mutation("langevin-step-factor", "medrecon/samplers/mbir.py",
             "eps = 2.0 * (snr * nz / g.clamp_min(torch.finfo(g.dtype).tiny)) ** 2",
             "eps = (snr * nz / g.clamp_min(torch.finfo(g.dtype).tiny)) ** 2", SAMPLER_TESTS,
             "Langevin step without the factor 2"),
    Mutation("langevin-chunk-noise-norm", "medrecon/samplers/mbir.py",
             "nz[start:start + chunk] = nz[start:start + chunk].mean()", "pass", SAMPLER_TESTS,
             "published chunk norms: the noise norm is not averaged"),
    Mutation("sirt-final-step-half", "medrecon/samplers/mbir.py",
             "return x + scale * op.adjoint(y - op.forward(x))",
             "return x + 0.5 * scale * op.adjoint(y - op.forward(x))", SAMPLER_TESTS,
             "final SIRT-like step halved"),
    Mutation("admm-dual-sign", "medrecon/solvers/admm.py",
             "u = state.u + dx - z\n", "u = state.u - dx + z\n", SOLVER_TESTS,
             "ADMM dual update with the wrong sign"),
    Mutation("admm-rhs-dual-sign", "medrecon/solvers/admm.py",
             "rhs = self.aty + self.rho * self.diff.adjoint(state.z - state.u)",
             "rhs = self.aty + self.rho * self.diff.adjoint(state.z + state.u)", SOLVER_TESTS,
             "x-update right-hand side with z + u"),
    Mutation("prox-drops-anchor", "medrecon/solvers/admm.py",
             "rhs = admm.aty + admm.rho * admm.diff.adjoint(state.z - state.u) + weight * anchor",
             "rhs = admm.aty + admm.rho * admm.diff.adjoint(state.z - state.u)", SOLVER_TESTS,
             "proximal ADMM step without the anchor"),
    Mutation("cg-steepest-descent", "medrecon/solvers/cg.py",
             "p = r + beta * p", "p = r", SOLVER_TESTS,
             "CG loses its conjugate directions"),
    Mutation("dz-neumann-adjoint", "medrecon/solvers/tv.py",
             "out.narrow(axis, n - 1, 1).add_(g.narrow(axis, n - 2, 1))", "pass", SOLVER_TESTS,
             "D_z^T drops the last slice's term"),
    Mutation("weights-rho-absolute", "medrecon/samplers/conventions.py",
             "return AdmmWeights(lam_rel * norm_sq, rho_rel * norm_sq, gamma, norm_sq)",
             "return AdmmWeights(lam_rel * norm_sq, rho_rel, gamma, norm_sq)", SAMPLER_TESTS,
             "rho not scaled by ||A||^2"),
    Mutation("dds-sigma-floor", "medrecon/samplers/dds.py",
             "x0r = prior_chunked(net, xr, max(sigma, sig_floor), cfg.chunk, precision=precision)",
             "x0r = prior_chunked(net, xr, sigma, cfg.chunk, precision=precision)", SAMPLER_TESTS,
             "the prior is queried below its sigma_min"),
    Mutation("dds-2d-dc-one-system", "medrecon/samplers/dds.py",
             "batched=True), {}", "batched=False), {}", SAMPLER_TESTS,
             "2D data consistency: one CG for all slices instead of one per slice"),
    Mutation("vp-sigma", "medrecon/samplers/schedules.py",
             "return math.sqrt((1.0 - alpha_bar) / alpha_bar)", "return math.sqrt(1.0 - alpha_bar)",
             SAMPLER_TESTS + ("tests/test_samplers_schedules.py",), "VE level without 1 / abar"),
    Mutation("mbir-last-step-noise", "medrecon/samplers/mbir.py",
             "if not final:\n            x_p = x_p", "if True:\n            x_p = x_p", SAMPLER_TESTS,
             "the last predictor step adds noise"),
    Mutation("langevin-noise-scale", "medrecon/samplers/mbir.py",
             "x_c = x_c + torch.sqrt(2.0 * e) * zc", "x_c = x_c + torch.sqrt(e) * zc", SAMPLER_TESTS,
             "Langevin noise sqrt(e) instead of sqrt(2 e)"),
    Mutation("admm-threshold", "medrecon/solvers/admm.py",
             "z = soft_threshold(dx + state.u, self.lam / self.rho)",
             "z = soft_threshold(dx + state.u, self.lam)", SOLVER_TESTS,
             "soft threshold lambda instead of lambda / rho"),
    Mutation("posterior-std-biased", "medrecon/samplers/posterior.py",
             "std = torch.sqrt(m2.clamp_min(0) / (samples - 1))",
             "std = torch.sqrt(m2.clamp_min(0) / samples)", SAMPLER_TESTS,
             "posterior std divided by K instead of K - 1"),
    Mutation("dicom-per-frame-intercept", "medrecon/io/dicom_reader.py",
             'icpt = get("PixelValueTransformationSequence", "RescaleIntercept")',
             'icpt = _first(shared, "PixelValueTransformationSequence", "RescaleIntercept")',
             DICOM_TESTS, "an enhanced multi-frame file's per-frame intercept is ignored"),
    Mutation("astra-pixel-size", "medrecon/physics/ct.py",
             "ny, nx = geometry.image_shape\n    hx, hy = nx * geometry.pixel_size / 2, ny * geometry.pixel_size / 2",
             "ny, nx = geometry.image_shape\n    hx, hy = nx / 2, ny / 2", CT_TESTS,
             "ASTRA volume geometry ignores the pixel size"),
    Mutation("cli-multi-line-errors", "medrecon/cli.py",
             'print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)',
             'print(f"{prog}: error: {exc}", file=sys.stderr)', CLI_TESTS,
             "the CLI prints a library's multi-line message"),
    Mutation("cli-interrupt-exit-2", "medrecon/cli.py",
             "return 130\n    except UserError", "return 2\n    except UserError", CLI_TESTS,
             "an interrupted sampler exits 2"),
    # -- issue 23: slabs of a measurement ----------------------------------------------------
    Mutation("slab-cut-one-too-many", "medrecon/slab_driver.py",
             "np.ascontiguousarray(arr[lo:hi]) if per_slice", "np.ascontiguousarray(arr[lo:hi + 1]) if per_slice",
             SPLIT_TESTS, "a per-slice array is cut one slice too long"),
    Mutation("slab-mask-ndim", "medrecon/slab_driver.py",
             '{"mask": 3, "coil_maps": 4}', '{"mask": 2, "coil_maps": 4}', SPLIT_TESTS,
             "a per-slice [Z, ky, kx] mask is taken as shared (and a [ky, kx] one cut)"),
    Mutation("slab-length-or", "medrecon/slab_driver.py",
             "== arr.ndim and arr.shape[0] == n", "== arr.ndim or arr.shape[0] == n", SPLIT_TESTS,
             "per-slice when the rank OR the length along z fits"),
    Mutation("slab-sends-reference", "medrecon/slab_driver.py",
             "if name in ROOT_ONLY:\n            continue", "if name in ROOT_ONLY:\n            pass",
             SPLIT_TESTS, "every rank is sent the reference volume"),
    # -- launchers ---------------------------------------------------------------------------
    Mutation("torchrun-local-rank-env", "medrecon/distributed/launch.py",
             'os.environ.get("LOCAL_RANK", "0")', 'os.environ.get("RANK", "0")', LAUNCH_TESTS,
             "torchrun's local rank read from RANK"),
    Mutation("srun-local-rank-env", "medrecon/distributed/launch.py",
             'os.environ.get("SLURM_LOCALID", "0")', 'os.environ.get("SLURM_NODEID", "0")', LAUNCH_TESTS,
             "srun's local rank read from SLURM_NODEID"),
    Mutation("srun-world-ntasks", "medrecon/distributed/launch.py",
             'world = _int("SLURM_STEP_NUM_TASKS")', 'world = _int("SLURM_NTASKS")', LAUNCH_TESTS,
             "srun's world size from the job's task count, not the step's"),
    Mutation("srun-port-no-modulo", "medrecon/distributed/launch.py",
             'str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)',
             'str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")))', LAUNCH_TESTS,
             "the rendezvous port is not wrapped into [20000, 40000)"),
    Mutation("cuda-rank-bound", "medrecon/distributed/launch.py",
             "if local_rank >= count:", "if local_rank > count:", LAUNCH_TESTS,
             "local rank N on a node with N GPUs is let through"),
    # -- metrics -----------------------------------------------------------------------------
    Mutation("metrics-coronal-sagittal-swap", "medrecon/metrics.py",
             '"coronal": 1, "sagittal": 2', '"coronal": 2, "sagittal": 1', METRICS_TESTS,
             "coronal and sagittal planes taken along the wrong axes"),
    Mutation("body-mask-mu-sign", "medrecon/metrics.py",
             "hu_to_mu(BODY_THRESHOLD_HU, MU_WATER)", "hu_to_mu(-BODY_THRESHOLD_HU, MU_WATER)",
             METRICS_TESTS, "body threshold +500 HU for volumes in 1/mm"),
    Mutation("body-mask-unscaled", "medrecon/metrics.py",
             "threshold = lo + (BODY_THRESHOLD_HU - lo_hu) * (hi - lo) / (hi_hu - lo_hu)",
             "threshold = lo + (BODY_THRESHOLD_HU - lo_hu)", METRICS_TESTS,
             "body threshold not scaled from HU to a.u. / window01"),
    Mutation("body-mask-at-threshold", "medrecon/metrics.py",
             "inside = ref > threshold", "inside = ref >= threshold", METRICS_TESTS,
             "voxels exactly at -500 HU counted as body"),
    # -- NRRD --------------------------------------------------------------------------------
    Mutation("nrrd-las-flip", "medrecon/io/nrrd.py",
             '"left-anterior-superior": (1.0, -1.0, 1.0)', '"left-anterior-superior": (-1.0, 1.0, 1.0)',
             NRRD_TESTS, "left-anterior-superior flips x instead of y"),
    Mutation("nrrd-las-short-name", "medrecon/io/nrrd.py",
             '"LAS": (1.0, -1.0, 1.0)', '"LAS": (1.0, 1.0, 1.0)', NRRD_TESTS,
             "space LAS read as LPS"),
    Mutation("nrrd-origin-unflipped", "medrecon/io/nrrd.py",
             "aff[:3, 3] = flip * origin", "aff[:3, 3] = origin", NRRD_TESTS,
             "the origin is not converted to LPS"),
    Mutation("nrrd-spacing-axis", "medrecon/io/nrrd.py",
             "np.linalg.norm(aff[:3, :3], axis=0)", "np.linalg.norm(aff[:3, :3], axis=1)", NRRD_TESTS,
             "voxel spacing from the affine's rows instead of its columns"),
    # -- output plans ------------------------------------------------------------------------
    Mutation("rollback-dir-kind", "medrecon/io/outputs.py",
             'if o.kind == "dir":\n                        _quietly(remove_path, o.real)',
             'if o.kind == "file":\n                        _quietly(remove_path, o.real)', OUTPUTS_TESTS,
             "a failed commit does not clear a new folder before restoring the old one"),
    Mutation("rollback-keeps-new-outputs", "medrecon/io/outputs.py",
             "else:\n                    _quietly(remove_path, o.real)\n            raise",
             "else:\n                    pass\n            raise", OUTPUTS_TESTS,
             "a failed commit leaves the outputs that did not exist before"),
    Mutation("rollback-in-flight-not-restored", "medrecon/io/outputs.py",
             "elif backup is not None:  # moved aside", "elif backup is None:  # moved aside",
             OUTPUTS_TESTS, "the output being replaced when the commit fails is not put back"),
    # -- units -------------------------------------------------------------------------------
    Mutation("units-mu-prior-not-ct", "medrecon/units.py",
             'if units in ("HU", "1/mm"):\n        return "CT"', 'if units in ("HU",):\n        return "CT"',
             UNITS_TESTS, "a prior trained in 1/mm is not known as CT"),
    Mutation("units-au-check-inverted", "medrecon/units.py",
             'and volume_units == "a.u.":', 'and volume_units != "a.u.":', UNITS_TESTS,
             "CT priors refused on HU data instead of a.u. data"),
    Mutation("units-modality-case", "medrecon/units.py",
             'str(card.get("modality") or "").upper()', 'str(card.get("modality") or "")', UNITS_TESTS,
             "a card's modality 'mr' not recognised"),
    Mutation("units-normalised-and", "medrecon/units.py",
             'if units == "normalised" or intensity', 'if units == "normalised" and intensity', UNITS_TESTS,
             "an MR prior needs both normalised units and convention"),
    # -- training ----------------------------------------------------------------------------
    Mutation("ema-weight-swapped", "medrecon/prior/train.py",
             "e.lerp_(p, 1.0 - cfg.ema_decay)", "e.lerp_(p, cfg.ema_decay)", TRAIN_TESTS,
             "EMA moves by d instead of 1 - d"),
    Mutation("ema-wrong-side", "medrecon/prior/train.py",
             "e.lerp_(p, 1.0 - cfg.ema_decay)", "p.lerp_(e, 1.0 - cfg.ema_decay)", TRAIN_TESTS,
             "the weights are pulled towards the EMA instead"),
    Mutation("validation-on-raw-weights", "medrecon/prior/train.py",
             "return float(edm_loss(self.ema,", "return float(edm_loss(self.model,", TRAIN_TESTS,
             "validation scores the raw weights, not the EMA"),
    Mutation("train-no-grad-clip", "medrecon/prior/train.py",
             "torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)", "pass",
             TRAIN_TESTS, "gradients not clipped"),
    Mutation("edm-target-uncentred", "medrecon/prior/train.py",
             "target = ((x0 - centre) - c_skip * (x - centre)) / c_out",
             "target = (x0 - c_skip * x) / c_out", TRAIN_TESTS,
             "EDM target without the centring the network sees"),
    # -- the prior-fit refusal ---------------------------------------------------------------
    Mutation("fit-p1-sign", "medrecon/samplers/run.py",
             "or p1 < -3.0:", "or p1 < 3.0:", FIT_TESTS, "refuses any image whose p1 is below +3"),
    Mutation("fit-refuse-and", "medrecon/samplers/run.py",
             "<= FIT_REFUSE[1]) or p1", "<= FIT_REFUSE[1]) and p1", FIT_TESTS,
             "refuses only when both percentiles are out"),
    Mutation("fit-warn-drops-p1", "medrecon/samplers/run.py",
             "<= FIT_WARN[1]) or p1 < -0.5:", "<= FIT_WARN[1]):", FIT_TESTS,
             "a low 1st percentile is not warned about"),
    Mutation("fit-image-is-adjoint", "medrecon/samplers/run.py",
             "else cgls(op, y_prior, 10, slab=slab)", "else op.adjoint(y_prior)", FIT_TESTS,
             "without a warm start the back-projection is judged instead of a solve"),
    Mutation("fit-complex-real-part", "medrecon/samplers/run.py",
             "v = (x.abs() if x.is_complex() else x)", "v = (x.real if x.is_complex() else x)",
             FIT_TESTS, "complex images judged by their real part"),
    Mutation("fit-rank-local", "medrecon/samplers/run.py",
             "v = slab.all_gather(v.contiguous())", "v = v.contiguous()",
             FIT_TESTS, "each rank judges its own slab only"),
    # -- issue 19: any size, pixel-spacing contract, multi-scale data; issue 20: slice noise ---
    Mutation("any-size-no-padding", "medrecon/prior/network.py",
             "ph, pw = -h % m, -w % m", "ph, pw = 0, 0", ANY_SIZE_TESTS,
             "slices of a size the network cannot halve are not padded"),
    Mutation("spacing-refusal-inverted", "medrecon/units.py",
             'volume_units != "a.u." and not spacing_fits(', 'volume_units != "a.u." and spacing_fits(',
             ANY_SIZE_TESTS, "a pixel spacing inside the card's range is refused, outside accepted"),
    Mutation("spacing-no-lower-slack", "medrecon/prior/card.py",
             "return lo * (1 - SPACING_TOLERANCE) <= spacing", "return lo <= spacing", ANY_SIZE_TESTS,
             "the 2 % slack is dropped at the fine end of the range"),
    Mutation("memory-chunk-whole-memory", "medrecon/samplers/prior_calls.py",
             "fits = max(1, int(fraction * free) // per_image)", "fits = max(1, int(free) // per_image)",
             ANY_SIZE_TESTS, "network calls sized for all free memory, not the fraction"),
    Mutation("multiscale-upsamples", "medrecon/prior/data.py",
             "if s * max_upsampling < native:", "if s < native:", ANY_SIZE_TESTS,
             "levels finer than the volume allows by the upsampling limit are dropped"),
    Mutation("resume-check-late", "medrecon/samplers/run.py",
             "    if resume and store is not None:       # refuse another run's state before the warm start",
             "    if False:", CLI_TESTS, "another run's state is refused only after the ADMM-TV warm start"),
    Mutation("slice-noise-cos-cos", "medrecon/samplers/slice_noise.py",
             "b = torch.sin(t * math.pi / 2).to(anchors.dtype)", "b = torch.cos(t * math.pi / 2).to(anchors.dtype)",
             ("tests/test_slice_noise.py",), "the path between anchors loses unit variance"),
    Mutation("slice-noise-slab-rows", "medrecon/samplers/noise.py",
             "mine = self.slab.take(full, rows_per_slice).clone() if self.slab is not None else full",
             "mine = self.slab.take(full, 1).clone() if self.slab is not None else full",
             ("tests/test_slice_noise.py",), "a slab of complex noise takes slices, not rows"),
]


def scratch_copy(dest: Path) -> None:
    """The working tree (tracked and untracked files, not ignored ones) copied to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run_one(m: Mutation, python: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        dest = Path(tmp)
        scratch_copy(dest)
        target = dest / m.path
        text = target.read_text()
        count = text.count(m.old)
        if count != 1:
            return {"name": m.name, "status": "does not apply", "detail": f"{m.path}: pattern "
                    f"found {count} times"}
        target.write_text(text.replace(m.old, m.new))     # m.old starts after the indentation
        env = dict(os.environ, PYTHONPATH=str(dest), PYTHONDONTWRITEBYTECODE="1")
        t0 = time.perf_counter()
        # SIGINT back to its default: a background job inherits it ignored, and the resume tests
        # check the handlers the samplers restore
        proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
                               *m.tests], cwd=dest, env=env, capture_output=True, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        failed = sorted(set(re.findall(r"^FAILED (\S+)", proc.stdout, re.M)))
        errors = sorted(set(re.findall(r"^ERROR (\S+)", proc.stdout, re.M)))
        status = "caught" if (failed or errors or proc.returncode not in (0, 5)) else "NOT CAUGHT"
        return {"name": m.name, "status": status, "why": m.why, "failed": failed + errors,
                "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, help="mutation names to run")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--python", default=sys.executable, help="interpreter with medrecon's dependencies")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
        ap.error(f"unknown mutation(s): {', '.join(unknown)}")
    if args.list:
        for m in chosen:
            print(f"{m.name:32s} {m.path}: {m.why}")
        return 0
    results = []
    for m in chosen:
        r = run_one(m, args.python)
        results.append(r)
        shown = ", ".join(r.get("failed", [])[:3]) + (" ..." if len(r.get("failed", [])) > 3 else "")
        print(f"{r['name']:32s} {r['status']:14s} {len(r.get('failed', []))} failing: {shown}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if any(r["status"] == "does not apply" for r in results):
        return 2
    return 1 if any(r["status"] != "caught" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
