"""Reconstruction through the command line with measured quality: FBP, DDS and DiffusionMBIR
(shipped phantom prior) on a held-out ellipsoid phantom, and ``medrecon demo``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from golden_cases import CASES, check
from medrecon.cli import main


def test_cli_dds_and_mbir_beat_fbp_at_their_golden_psnr() -> None:
    """phantom -> simulate (8 views) -> reconstruct, PSNR from reconstruct's metrics JSON.
    Measured: FBP 11.1 dB, DDS (10 steps, warm start) 31.6 dB, DiffusionMBIR (20 steps from
    sigma 5) 15.6 dB; each held to its golden (+/- 0.05 dB FBP, +/- 0.1 dB diffusion)."""
    values = {name: CASES[name].measure()
              for name in ("cli-fbp-sv8", "cli-dds-phantom-sv8", "cli-mbir-phantom-sv8")}
    for name, value in values.items():
        check(name, value)
    fbp = values["cli-fbp-sv8"]
    assert values["cli-dds-phantom-sv8"] >= fbp + 15.0 and values["cli-mbir-phantom-sv8"] >= fbp + 3.0


def _demo(tmp: Path, *argv: str) -> dict:
    assert main(["--quiet", "demo", "--no-diffusion", "--shape", "4", "64", "64", "--output",
                 str(tmp), *argv]) == 0
    return json.loads((tmp / "metrics.json").read_text())


@pytest.mark.parametrize("task,methods,better,worse,gain", [
    ("sparse-view-ct", ("fbp", "tv"), "tv", "fbp", 8.0),              # measured 25.5 vs 15.9 dB
    ("cs-mri", ("zero-filled", "sense", "tv"), "sense", "zero-filled", 6.0),   # 33.0 vs 25.3 dB
])
def test_demo_writes_its_set_and_the_metrics_it_prints(task, methods, better, worse, gain,
                                                       tmp_path, capsys) -> None:
    from medrecon.io import load_volume
    from medrecon.metrics import psnr
    from medrecon.phantoms import shepp_logan_3d

    out = tmp_path / "demo"
    summary = _demo(out, "--task", task)
    printed = capsys.readouterr().out
    assert set(summary["metrics"]) == set(methods) and summary["shape"] == [4, 64, 64]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{m}.nii.gz" for m in methods] + ["reference.nii.gz", "metrics.json", "comparison.png"])
    ref = shepp_logan_3d((4, 64, 64), contrast="mr" if task == "cs-mri" else "ct")
    np.testing.assert_allclose(load_volume(out / "reference.nii.gz").array, ref, atol=1e-6)
    for m in methods:         # the JSON (and the printed table) are the volumes' own PSNR
        got = psnr(load_volume(out / f"{m}.nii.gz").array, ref, summary["data_range"])
        assert summary["metrics"][m]["psnr"] == pytest.approx(got, abs=1e-3)
        assert f"{summary['metrics'][m]['psnr']:.2f}" in printed
    assert summary["metrics"][better]["psnr"] >= summary["metrics"][worse]["psnr"] + gain
    # a second run into the same folder refuses to overwrite and leaves the files as they were
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["--quiet", "demo", "--no-diffusion", "--task", task, "--shape", "4", "64", "64",
                 "--output", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_demo_with_dds(tmp_path) -> None:
    """The demo's diffusion row (shipped phantom prior, task defaults) on 4 slices at 128x128."""
    assert main(["--quiet", "demo", "--shape", "4", "128", "128", "--output", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert m["dds"]["psnr"] >= m["fbp"]["psnr"] + 8.0, m
