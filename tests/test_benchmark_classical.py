"""benchmarks/classical.py: the smallest configuration (``--smoke``) runs as one command, its
table has every task x method x implementation with the documented columns (in the printed
table, the markdown and the JSON alike), and the numbers it reports for two rows equal the ones
recomputed here directly from medrecon / SigPy."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medrecon.metrics import plane_metrics, ssim as ssim_metric
from medrecon.phantoms import shepp_logan_3d
from medrecon.tasks import CTOptions, MRIOptions, simulate
from medrecon.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "classical.py"
SMOKE = (4, 32, 32)
COLUMNS = ["task", "method", "implementation", "PSNR", "SSIM", "axial PSNR", "coronal PSNR",
           "sagittal PSNR", "seconds"]
CT_ROWS = {("medrecon", m) for m in ("fbp", "sirt", "cgls", "tv")} | {("skimage", "fbp")} | \
    {("astra", "sirt"), ("astra", "cgls")}
MRI_ROWS = {("medrecon", m) for m in ("zero-filled", "sense", "tv")} | {("sigpy", "sense"), ("sigpy", "tv")}
EXPECTED = {(c, i, m) for c in ("sv8", "sv8-i0", "la90") for i, m in CT_ROWS} | \
    {(c, i, m) for c in ("mri-x4", "mri-x8") for i, m in MRI_ROWS}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, str(SCRIPT), "--smoke", "--output-dir", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "classical.json").read_text())
    return proc.stdout, result, (out / "classical.md").read_text(), out


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((x.astype(np.float64) - ref) ** 2)))


def _md_rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


def _check_row_equals(row: dict, x: np.ndarray, ref: np.ndarray) -> None:
    """The row's numbers are those of ``x`` against ``ref`` (PSNR from the MSE here; SSIM and the
    per-plane averages with medrecon.metrics, whose definitions the benchmark documents)."""
    assert row["psnr"] == pytest.approx(_psnr(x, ref), abs=1e-3)
    assert row["ssim"] == pytest.approx(ssim_metric(x, ref, 1.0), abs=1e-4)
    for plane in ("axial", "coronal", "sagittal"):
        want = plane_metrics(x, ref, 1.0, plane)
        assert row["planes"][plane]["psnr"] == pytest.approx(want["psnr"], abs=1e-3)
        assert row["planes"][plane]["ssim"] == pytest.approx(want["ssim"], abs=1e-4)


def test_smoke_table_structure_and_recomputed_rows(smoke):
    stdout, result, md, out = smoke
    rows = result["rows"]

    # structure: every case x implementation x method once, the documented columns everywhere
    assert result["columns"] == COLUMNS
    assert result["options"]["shape"] == list(SMOKE)
    assert {(r["case"], r["implementation"], r["method"]) for r in rows} == EXPECTED
    assert len(rows) == len(EXPECTED)
    for r in rows:
        assert math.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 and r["seconds"] > 0
        assert set(r["planes"]) == {"axial", "coronal", "sagittal"}

    # markdown: the exact command first, then the table whose cells are the JSON values
    assert result["command"] == shlex.join(["python", "benchmarks/classical.py", "--smoke",
                                            "--output-dir", str(out)])
    md_lines = md.splitlines()
    fence = md_lines.index("```")
    assert md_lines[fence + 1] == result["command"] and fence < 5
    table = _md_rows(md)
    assert table[0] == COLUMNS
    body = table[1:len(rows) + 1]
    assert len([t for t in table if t[0] != "task"]) == len(rows)
    for cells, r in zip(body, rows):
        assert cells[:3] == [r["task"], r["method"], r["implementation"]]
        nums = [float(c) for c in cells[3:]]
        want = [r["psnr"], r["ssim"], r["planes"]["axial"]["psnr"], r["planes"]["coronal"]["psnr"],
                r["planes"]["sagittal"]["psnr"], r["seconds"]]
        for got, w, digits in zip(nums, want, (2, 3, 2, 2, 2, 2)):
            assert abs(got - w) <= 0.5 * 10 ** -digits + 1e-12
    # printed table: header with the same columns and one line per row
    printed = stdout.splitlines()
    assert printed[0].startswith("$ python benchmarks/classical.py --smoke")
    header = next(i for i, ln in enumerate(printed) if ln.startswith("task"))
    assert printed[header].split()[:3] == ["task", "method", "implementation"]
    assert sum(1 for ln in printed[header + 2:] if ln.strip() and not ln.startswith("wrote")) == len(rows)

    # the TV weight reported is the grid's best, and the convention checks hold
    for info in result["cases"].values():
        for key in ("tv_grid_medrecon", "tv_grid_sigpy"):
            if key in info:
                g = info[key]
                assert g["best"] == max(g["results"], key=lambda e: e["psnr"])["value"]
    checks = result["checks"]["skimage"]
    assert checks["sinogram_rel_diff_vs_skimage_radon"] < 0.1 < checks["sinogram_rel_diff_if_angles_mirrored"]
    assert checks["iradon_vs_medrecon_fbp_psnr"] > 35
    assert result["cases"]["sv8"]["astra_projector_check"]["fp_rel_diff_vs_medrecon_data"] < 1e-2
    assert result["cases"]["mri-x4"]["sigpy_operator_check"]["sense_rel_diff_vs_medrecon_data"] < 1e-5

    # one medrecon row recomputed independently (medrecon SIRT, sparse view, 8 views)
    from medrecon.methods import run_method
    from medrecon.tasks import to_volume_units

    torch.set_num_threads(result["options"]["threads"])
    vol = Volume.from_array(shepp_logan_3d(SMOKE, contrast="ct"), modality="CT")
    m = simulate(vol, "sparse-view-ct", seed=0, ct=CTOptions(views=8))
    x = to_volume_units(run_method(m, "sirt", backend=result["options"]["backend"]), m)
    row = next(r for r in rows if (r["case"], r["implementation"], r["method"]) == ("sv8", "medrecon", "sirt"))
    _check_row_equals(row, x, vol.array)

    # one peer row recomputed independently (SigPy SenseRecon, x4 uniform 1D, 8 coils)
    from sigpy.mri.app import SenseRecon

    mr_vol = Volume.from_array(shepp_logan_3d(SMOKE, contrast="mr"), modality="MR")
    mm = simulate(mr_vol, "cs-mri", seed=0, mri=MRIOptions(acceleration=4, mask="uniform1d", coils=8))
    scale = float(mm.attrs["scale"])
    weights = mm.arrays["mask"].astype(np.float32)
    x = np.stack([np.abs(SenseRecon(mm.data[z] / scale, mm.arrays["coil_maps"], lamda=0.0,
                                    weights=weights, max_iter=30, show_pbar=False).run()) * scale
                  for z in range(SMOKE[0])])
    row = next(r for r in rows if (r["case"], r["implementation"], r["method"]) == ("mri-x4", "sigpy", "sense"))
    _check_row_equals(row, x, mr_vol.array)


@pytest.fixture(scope="module")
def bench():
    """benchmarks/classical.py imported as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_classical", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return mod


def test_tv_weight_selection(bench):
    """The grid keeps the value with the best PSNR on the central slab, then runs it once on the
    whole volume (or reuses the grid's run when the slab is the whole volume)."""
    vol = Volume.from_array(shepp_logan_3d((7, 16, 16)), modality="CT")
    m = simulate(vol, "sparse-view-ct", seed=0, ct=CTOptions(views=4))
    calls = []

    def run(sub, v):                      # error grows with |v - 2|: the best value is 2
        calls.append((sub.data.shape[0], v))
        ref = np.asarray(sub.arrays["reference"])
        return ref + 0.01 * (1 + abs(v - 2.0)) * np.cos(np.arange(ref.size)).reshape(ref.shape)

    summary, w, _ = bench.Runner(grid_slices=3).tuned(m, run, [1.0, 2.0, 4.0])
    assert summary["best"] == 2.0 and not summary["best_at_edge"] and summary["slab"] == [2, 5]
    assert calls == [(3, 1.0), (3, 2.0), (3, 4.0), (7, 2.0)]
    np.testing.assert_array_equal(w, run(m, 2.0))
    calls.clear()
    summary, w, _ = bench.Runner(grid_slices=0).tuned(m, run, [2.0, 3.0])
    assert summary["best"] == 2.0 and summary["best_at_edge"] and calls == [(7, 2.0), (7, 3.0)]
    np.testing.assert_array_equal(w, run(m, 2.0))


def test_bad_shape_is_a_clear_error(bench, capsys):
    assert bench.main(["--shape", "4", "32", "16"]) == 2
    assert "Y = X" in capsys.readouterr().err
    assert bench.main(["--smoke", "--cases", "nope"]) == 2
    assert "unknown ['nope']" in capsys.readouterr().err
