"""Reference trajectories: DDS and DiffusionMBIR step by step against independent computations.

A closed-form prior (the Wiener denoiser of a Gaussian prior, which records its inputs) runs a few
steps of each sampler. Every step's input, Tweedie estimate / scores, data-consistency output and
re-noised sample (through the samplers' ``trace`` hook), every input the denoiser was given, and
the result are compared with :mod:`reference_samplers`: the published equations written out in
float64 (VP DDIM with eta for DDS, the VE predictor-corrector for DiffusionMBIR, ADMM-TV(z) with
textbook CG on the normal equations, dense ``D_z``), fed from the same seeded noise source.

The bars are round-off: relative errors below 1e-12 for float64/complex128 operators and 2e-5 for
float32 (ASTRA computes in float32). A wrong sign, a dropped term, a reset split or a missing
noise draw moves some quantity by 1e-3 or (much) more.
"""

from __future__ import annotations

import math

import pytest
import torch

from denoisers import smooth_power_spectrum, smooth_template
from matrix_operator import random_matrix_operator
from medrecon.physics.ct import make_ct_operator, parallel_geometry, sparse_view_angles
from medrecon.samplers.noise import NoiseSource
from medrecon.samplers.dds import dds
from medrecon.samplers.mbir import mbir
from reference_samplers import (AdmmReference, RecordingWiener, apply_z, ddpm_alpha_bars,
                                dds_reference, dz_matrix, exact, from_batch, mbir_reference,
                                to_batch)

N, Z = 16, 4
NORM_SQ = 100.0                 # ||A||^2 given to the samplers, so lambda and rho are known exactly
TOL = {torch.float64: 1e-12, torch.complex128: 1e-12, torch.float32: 2e-5}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to(torch.complex128), b.detach().to(torch.complex128)
    return float((a - b).abs().norm() / max(float(b.abs().norm()), 1e-300))


def _prior(dtype: torch.dtype) -> RecordingWiener:
    return RecordingWiener(0.5 * smooth_template(N), smooth_power_spectrum(N, corr=2.0),
                           dtype=torch.float32 if dtype == torch.float32 else torch.float64)


def _problem(kind: str):
    """``(op, y, truth, x_init)``: 6-view parallel-beam CT (torch Joseph in float64, or ASTRA in
    float32), or a dense complex128 matrix (an MRI-like complex problem)."""
    gen = torch.Generator().manual_seed(0)
    base = 0.5 * smooth_template(N)
    pert = 0.05 * torch.randn(Z, N, N, dtype=torch.float64, generator=gen)
    truth = base + pert.cumsum(0) / math.sqrt(Z)              # slices correlated along z
    if kind == "complex":
        op = random_matrix_operator(120, (N, N), torch.complex128, seed=3)
        truth = torch.complex(truth, 0.1 * torch.roll(truth, 3, dims=-1))
    else:
        dtype = torch.float64 if kind == "ct64" else torch.float32
        geom = parallel_geometry((N, N), sparse_view_angles(6))
        op = make_ct_operator(geom, "torch" if kind == "ct64" else "astra", dtype=dtype)
        truth = truth.to(dtype)
    y = op(truth)
    x_init = truth + 0.05 * torch.randn(truth.shape, dtype=truth.dtype, generator=gen)
    return op, y, truth, x_init


def _compare(trace: list[dict], ref: list[dict], keys: tuple[str, ...], tol: float) -> None:
    assert len(trace) == len(ref)
    for i, (got, want) in enumerate(zip(trace, ref)):
        for key in keys:
            if want[key] is None:
                assert got[key] is None, (i, key)
                continue
            err = rel(got[key], want[key])
            assert err < tol, f"step {i}, {key}: relative error {err:.2e} (bar {tol:.0e})"


def _run_dds(op, y, prior, **kw):
    steps: list[dict] = []

    def trace(i, q):
        assert i == len(steps)
        steps.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in q.items()})

    result = dds(op, y, prior, op_norm_sq=NORM_SQ, trace=trace, **kw)
    return result, steps


DDS_CASES = {
    # name: (problem, sampler settings)
    "ct64-2d-dc": ("ct64", dict(steps=5, eta=0.85, tv_z=False)),
    "ct64-tvz": ("ct64", dict(steps=5, eta=0.85, tv_z=True, lam_rel=3e-3, rho_rel=0.05)),
    "ct64-tvz-prox": ("ct64", dict(steps=4, eta=0.5, tv_z=True, lam_rel=3e-3, rho_rel=0.05,
                                   gamma_rel=2.0)),
    "ct64-2d-prox-eta0": ("ct64", dict(steps=4, eta=0.0, tv_z=False, gamma_rel=2.0)),
    "ct32-tvz": ("ct32", dict(steps=5, eta=0.85, tv_z=True, lam_rel=3e-3, rho_rel=0.05)),
    "complex-tvz": ("complex", dict(steps=5, eta=0.85, tv_z=True, lam_rel=3e-3, rho_rel=0.05)),
}


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("name", sorted(DDS_CASES))
def test_dds_trajectory_matches_published_equations(name: str, warm: bool) -> None:
    kind, settings = DDS_CASES[name]
    op, y, _, x_init = _problem(kind)
    prior = _prior(op.in_dtype)
    extra = dict(start_sigma=0.5, x_init=x_init) if warm else {}
    result, trace = _run_dds(op, y, prior, seed=7, cg_iterations=5, **settings, **extra)
    ref = dds_reference(
        op, y, prior.mean, prior.power, steps=settings["steps"], eta=settings["eta"],
        lam=settings.get("lam_rel", 1.026e-4) * NORM_SQ, rho=settings.get("rho_rel", 0.02564) * NORM_SQ,
        cg_iterations=5, tv_z=settings["tv_z"], seed=7,
        w=NORM_SQ / settings["gamma_rel"] if settings.get("gamma_rel") else 0.0,
        x_init=x_init if warm else None, start_sigma=0.5 if warm else 0.0)
    tol = TOL[op.in_dtype]
    _compare(trace, ref, ("x", "x0_hat", "eps", "x0_dc", "noise", "x_next"), tol)
    # the prior saw exactly the reference inputs, at the reference noise levels
    abar = ddpm_alpha_bars()
    sig_ref = [math.sqrt((1 - abar[s["t"]]) / abar[s["t"]]) for s in ref]
    assert [t["sigma"] for t in trace] == pytest.approx(sig_ref, rel=1e-12)
    seen, seen_sigma = prior.recorded_inputs(trace[0]["x"].shape[0])
    assert seen.shape[0] == settings["steps"]
    for i, step in enumerate(ref):
        assert rel(seen[i], step["x"]) < tol, i
        assert seen_sigma[i].tolist() == pytest.approx([sig_ref[i]] * seen.shape[1], rel=1e-6)
    assert rel(result.x, ref[-1]["x0_dc"]) < tol            # the last step returns the clean image


@pytest.mark.parametrize("kind", ["ct64", "complex"])
def test_dds_warm_start_is_x_init_plus_sigma_noise_and_split_at_dz_x_init(kind: str) -> None:
    """The warm start itself, read off step 0: input ``x_init + sigma_0 n`` with ``n`` the seeded
    noise source's first draw, and the ADMM split started at ``z = D_z x_init, u = 0``."""
    op, y, _, x_init = _problem(kind)
    prior = _prior(op.in_dtype)
    _, trace = _run_dds(op, y, prior, seed=11, steps=4, tv_z=True, lam_rel=3e-3, rho_rel=0.05,
                        start_sigma=0.5, x_init=x_init)
    sigma0 = trace[0]["sigma"]
    assert 0.45 < sigma0 <= 0.5
    n = NoiseSource(11).normal(tuple(trace[0]["x"].shape), torch.float32, torch.device("cpu"))
    want = to_batch(x_init.to(torch.complex128 if kind == "complex" else torch.float64)) \
        + sigma0 * n.to(torch.float64)
    assert rel(trace[0]["x"], want) < 1e-12
    # the data-consistency output of step 0 with z = D_z x_init differs from the one with z = 0
    A, AT = exact(op)
    yy = y.to(torch.complex128 if kind == "complex" else torch.float64)
    admm = AdmmReference(A, AT, yy, Z, 3e-3 * NORM_SQ, 0.05 * NORM_SQ, 5)
    x0 = from_batch(trace[0]["x0_hat"].to(torch.float64), kind == "complex")
    dz = apply_z(dz_matrix(Z), x_init.to(x0.dtype))
    with_split, _, _ = admm.step(x0, dz, torch.zeros_like(dz))
    from_zero, _, _ = admm.step(x0, torch.zeros_like(dz), torch.zeros_like(dz))
    assert rel(trace[0]["x0_dc"], with_split) < 1e-12
    assert rel(trace[0]["x0_dc"], from_zero) > 1e-4


MBIR_CASES = {
    "ct64": ("ct64", dict(corrector_norm="slice", boundary="neumann", final_dc=True)),
    "ct64-published-norms": ("ct64", dict(corrector_norm="chunk", chunk=3, boundary="circular",
                                          final_dc=True)),
    "ct32": ("ct32", dict(corrector_norm="slice", boundary="neumann", final_dc=False)),
}


@pytest.mark.parametrize("name", sorted(MBIR_CASES))
def test_mbir_trajectory_matches_published_equations(name: str) -> None:
    kind, settings = MBIR_CASES[name]
    op, y, _, _ = _problem(kind)
    prior = _prior(op.in_dtype)
    steps: list[dict] = []

    def trace(i, q):
        steps.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in q.items()})

    kw = dict(steps=6, sigma_min=0.01, sigma_max=20.0, snr=0.16, lam_rel=3e-3, rho_rel=0.05,
              cg_iterations=2)
    result = mbir(op, y, prior, seed=5, op_norm_sq=NORM_SQ, trace=trace, **kw, **settings)
    ref, final = mbir_reference(
        op, y, prior.mean, prior.power, steps=6, sigma_min=0.01, sigma_max=20.0, snr=0.16,
        lam=3e-3 * NORM_SQ, rho=0.05 * NORM_SQ, cg_iterations=2, seed=5,
        chunk_norms=settings.get("chunk") if settings["corrector_norm"] == "chunk" else None,
        circular=settings["boundary"] == "circular")
    tol = TOL[op.in_dtype]
    _compare(steps, ref, ("x", "score", "noise", "x_predictor", "score_corrector",
                          "noise_corrector", "step_size", "x_corrector", "x_next"), tol)
    seen, _ = prior.recorded_inputs(Z)                     # two network evaluations per step
    assert seen.shape[0] == 12
    for i, step in enumerate(ref):
        assert rel(seen[2 * i], step["x"]) < tol and rel(seen[2 * i + 1], step["x_predictor"]) < tol
    sig = [s["sigma"] for s in steps]
    assert sig == pytest.approx([20.0 * (0.01 / 20.0) ** (i / 5) for i in range(6)], rel=1e-12)
    want = final if settings["final_dc"] else ref[-1]["x_next"]
    assert rel(result.x, want) < tol


def test_dds_never_queries_the_prior_below_its_sigma_min() -> None:
    """At the last timestep (sigma 0.01) a prior trained down to 0.05 is asked at 0.05; eps still
    divides by the step's own sigma: ``eps = (x - D(x, 0.05)) / 0.01``."""
    op, y, _, _ = _problem("ct64")
    prior = RecordingWiener(0.5 * smooth_template(N), smooth_power_spectrum(N, corr=2.0),
                            sigma_min=0.05)
    _, trace = _run_dds(op, y, prior, seed=2, steps=5, tv_z=False)
    _, asked = prior.recorded_inputs(Z)
    assert [float(s[0]) for s in asked] == pytest.approx(
        [max(t["sigma"], 0.05) for t in trace], rel=1e-6)
    assert trace[-1]["sigma"] < 0.05 and float(asked[-1][0]) == pytest.approx(0.05)
    last = trace[-1]
    assert rel(last["eps"], (last["x"] - last["x0_hat"]) / last["sigma"]) < 1e-12
