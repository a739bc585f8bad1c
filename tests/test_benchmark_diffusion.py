"""benchmarks/diffusion.py and scripts/benchmark.py: one small run with a stand-in prior (the
Wiener denoiser of tests/denoisers.py) writes every requested row with the documented columns, and
the numbers it reports equal the ones recomputed here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medrecon.metrics import volume_metrics
from medrecon.methods import run_method
from medrecon.phantoms import random_ellipsoids
from medrecon.tasks import CTOptions, simulate
from medrecon.volume import Volume

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _bench():
    if "bench_diffusion" not in sys.modules:     # dataclasses need the module registered
        spec = importlib.util.spec_from_file_location("bench_diffusion",
                                                      REPO / "benchmarks" / "diffusion.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_diffusion"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_diffusion"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    bench = _bench()
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--shape", "3", "32", "32", "--dds-steps", "4", "--mbir-steps", "3",
            "--tv-factors", "1", "--threads", "1", "--no-isolate", "--rows", "dds-2d", "dds", "dds-cold",
            "dds-default", "mbir", "--prior-factory",
            "denoisers:benchmark_prior", "--prior-factory-path", str(TESTS), "--output-dir", str(out)]
    assert bench.main(argv) == 0
    return bench, json.loads((out / "diffusion.json").read_text()), (out / "diffusion.md").read_text()


def test_every_row_and_column(run) -> None:
    bench, doc, md = run
    labels = [r["row"] for r in doc["rows"]]
    assert labels[:3] == ["FBP", "SIRT", "CGLS"] and labels[3].startswith("ADMM-TV 3D (best lam_rel")
    assert labels[4:] == [label for label, _, _ in bench.diffusion_rows((4,), 3)]
    assert "python benchmarks/diffusion.py --quick" in md and "| NFE/slice |" in md
    for r in doc["rows"]:
        assert set(r["planes"]) == {"axial", "coronal", "sagittal"} and r["seconds"] >= 0
    by = {r["row"]: r for r in doc["rows"]}
    assert by["DDS (4 steps)"]["info"]["time_warm_start"] > 0          # started from ADMM-TV
    assert by["DDS from noise, as published (4 steps)"]["info"]["time_warm_start"] == 0
    assert by["DiffusionMBIR (3 steps)"]["nfe_per_slice"] == 6
    assert by[labels[3]]["psnr"] > by["FBP"]["psnr"] + 3.0             # measured orderings


def test_reported_numbers_are_recomputable(run) -> None:
    bench, doc, _ = run
    vol = Volume.from_array(random_ellipsoids((3, 32, 32), seed=bench.PHANTOM_SEED, contrast="ct"),
                            modality="CT", units="a.u.")
    m = simulate(vol, "sparse-view-ct", seed=0, ct=CTOptions(views=8))
    ref = bench.working_reference(vol, m)
    fbp = run_method(m, "fbp").numpy()
    row = next(r for r in doc["rows"] if r["row"] == "FBP")
    assert row["psnr"] == pytest.approx(volume_metrics(fbp, ref, 1.0)["psnr"], abs=1e-9)


def test_markdown_re_rendered_from_json(run, tmp_path) -> None:
    bench, doc, md = run
    (tmp_path / "diffusion.json").write_text(json.dumps(doc))
    assert bench.main(["--from-json", str(tmp_path / "diffusion.json")]) == 0
    assert (tmp_path / "diffusion.md").read_text() == md


def test_rows_option_and_entry_point(tmp_path) -> None:
    bench = _bench()
    assert [m for _, m, _ in bench.diffusion_rows((5, 10), 5, ("dds", "mbir"))] == ["dds", "dds", "mbir"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--rows", "ddx"])
    entry = [sys.executable, str(REPO / "scripts" / "benchmark.py")]
    help_text = subprocess.run(entry + ["diffusion", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--rows" in help_text and "--mbir-steps" in help_text
    bad = subprocess.run(entry + ["nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown benchmark" in bad.stderr


def test_default_run_row_names_the_path_the_fit_check_took(monkeypatch) -> None:
    """The ``dds-default`` row runs as a user's run given no sampling settings (only the
    ``--dds-set`` keys count as chosen) and its label names the path the prior-fit check took;
    the other DDS rows keep their own path and their label."""
    bench = _bench()
    jobs = []

    def fake_run(job, isolate):
        jobs.append(job)
        fit = {"path": "safe start"} if job["method"] == "dds" else None
        return {"metrics": {"psnr": 20.0, "ssim": 0.5, "planes": {}}, "seconds": 0.0, "peak_mb": 0.0,
                "nfe_per_slice": 10, "info": {"prior_fit": fit, "time_physics": 0.0, "time_network": 1.0}}

    monkeypatch.setattr(bench, "run_isolated", fake_run)
    args = bench.parse_args(["--quick", "--shape", "3", "32", "32", "--tv-factors", "--rows", "dds",
                             "dds-default", "--dds-steps", "4", "--dds-set", "cg_iterations=3"])
    case = bench.make_cases(True)[0]
    rows, _ = bench.run_case(case, args, lambda s: None)
    dds = [r["row"] for r in rows if r["method"] == "dds"]
    assert dds == ["DDS (4 steps), cg_iterations=3", "DDS, default run, cg_iterations=3 (safe start)"]
    given = [j.get("user_settings") for j in jobs if j["method"] == "dds"]
    assert given == [None, ["cg_iterations"]]


def test_a_samples_setting_scores_the_mean_of_that_many_seeded_samples() -> None:
    """``--dds-set samples=2``: the row's PSNR is that of the mean of the runs seeded 0 and 1, and
    its network passes count both."""
    import torch

    from medrecon.samplers.config import config_for_task
    from medrecon.samplers.run import reconstruct
    from medrecon.tasks import build_operator, data_in_working_units

    bench = _bench()
    vol = Volume.from_array(random_ellipsoids((2, 32, 32), seed=3, contrast="ct"), modality="CT", units="a.u.")
    m = simulate(vol, "sparse-view-ct", seed=0, ct=CTOptions(views=8))
    ref = bench.working_reference(vol, m)
    job = {"measurement": m, "reference": ref, "device": "cpu", "seed": 0, "threads": 1, "prior": "x",
           "prior_factory": "denoisers:benchmark_prior", "sys_path": [str(TESTS)], "method": "dds",
           "settings": {"steps": 3, "samples": 2}}
    got = bench.run_row(job)
    op = build_operator(m)
    y = data_in_working_units(m, op)
    den = bench._load_denoiser("x", "cpu", "denoisers:benchmark_prior")
    runs = [reconstruct("dds", op, y, den, m, config_for_task("dds", m.task, (32, 32), 8, steps=3), seed=s).x
            for s in (0, 1)]
    mean = (runs[0] + (runs[1] - runs[0]) / 2).numpy()
    assert got["metrics"]["psnr"] == pytest.approx(volume_metrics(mean, ref, 1.0)["psnr"], abs=1e-6)
    assert not torch.equal(runs[0], runs[1])
    assert got["nfe_per_slice"] == 2 * 3 and got["info"]["samples"] == 2
    assert got["info"]["schedule"]["name"] == "uniform" and len(got["info"]["schedule"]["sigmas"]) == 3
