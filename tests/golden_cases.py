"""Golden values: measured reconstruction qualities the tests hold from both sides.

A golden is a PSNR (dB) measured once by ``scripts/regenerate_goldens.py`` and stored in
``tests/data/goldens.json`` with its tolerance, the command that measured it, the versions of
medrecon (git revision) and its numerical libraries, the date, and for a diffusion case the
SHA-256 of the prior's weights. A test passes when it measures the value within the tolerance:
a loss fails, and so does a gain (a gain means the code changed: regenerate and say why in the
commit). A golden measured with other weights than the shipped ones fails with the command
that regenerates it.

Tolerances: 0.05 dB for the deterministic classical methods, 0.1 dB for seeded diffusion runs
(the network's float32 sums may differ across CPUs and thread counts).

Cases that need the sample data (``python scripts/fetch_sample_data.py``) are slow tests.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

GOLDEN_FILE = Path(__file__).parent / "data" / "goldens.json"
FORMAT = "medrecon-goldens/1"
ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python scripts/regenerate_goldens.py"


@dataclass(frozen=True)
class GoldenCase:
    """One golden value: ``measure()`` returns it (dB); ``prior`` names the shipped prior it
    depends on (None: no prior); ``slow`` cases need the sample data or minutes of CPU."""

    name: str
    measure: Callable[[], float]
    tolerance: float
    what: str
    prior: Optional[str] = None
    slow: bool = False


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------
def _classical(name: str) -> Callable[[], float]:
    def measure() -> float:
        from regression_cases import measure as regression_measure

        return regression_measure(name)
    return measure


def _dds_phantom(**extra) -> Callable[[], float]:
    """DDS with the shipped phantom prior, 8-view sparse-view CT of a held-out ellipsoid phantom
    (test seed + 7), 4 slices, 20 network evaluations per slice."""
    def measure() -> float:
        from medrecon.methods import run_method
        from medrecon.metrics import psnr
        from medrecon.phantoms import TEST_SEED_START, random_ellipsoids
        from medrecon.tasks import CTOptions, simulate, to_volume_units
        from medrecon.volume import Volume

        volume = Volume.from_array(random_ellipsoids((4, 128, 128), seed=TEST_SEED_START + 7))
        m = simulate(volume, "sparse-view-ct", seed=0, ct=CTOptions(views=8))
        settings = {"prior": "phantom", "steps": 20, "seed": 0, **extra}
        return psnr(to_volume_units(run_method(m, "dds", settings), m), volume.array, 1.0)
    return measure


CLI_PHANTOM_SEED = 1_000_003          # a held-out member of the ellipsoid family


def cli_psnr(method: str, *settings: str) -> float:
    """PSNR of ``medrecon reconstruct --method METHOD`` run through the CLI: ``phantom`` (2
    slices of a held-out ellipsoid phantom, 128x128) -> ``simulate`` (8 views) ->
    ``reconstruct`` (--set SETTINGS) -> the metrics JSON it writes (reference in the file)."""
    from medrecon.cli import main

    with tempfile.TemporaryDirectory(prefix="golden-cli-") as tmp:
        d = Path(tmp)
        assert main(["--quiet", "phantom", "--kind", "ellipsoids", "--seed", str(CLI_PHANTOM_SEED),
                     "--shape", "2", "128", "128", "--output", str(d / "ph.nii.gz")]) == 0
        assert main(["--quiet", "simulate", "--task", "sparse-view-ct", "--views", "8", "--input",
                     str(d / "ph.nii.gz"), "--output", str(d / "m.h5")]) == 0
        extra = [a for s in settings for a in ("--set", s)]
        prior = ["--prior", "phantom"] if method in ("dds", "mbir") else []
        assert main(["--quiet", "reconstruct", "--input", str(d / "m.h5"), "--method", method,
                     *prior, *extra, "--output", str(d / "r.nii.gz")]) == 0
        return float(json.loads((d / "r.metrics.json").read_text())["psnr"])


def _data_prior(name: str) -> Callable[[], float]:
    """DDS with a shipped data prior on the held-out slabs shipped inside the package
    (medrecon/data: lung2 and brain2, subjects no prior was trained on): chest-ct: 4 central lung2
    slices, 8-view sparse-view CT, 20 steps, PSNR in the [-1000, 1000] HU window; brain-mri: 2
    central brain2 slices, x4 8-coil MRI, 10 steps, PSNR of the magnitude with data range the
    reference's 99.9th percentile (both with the task's default warm start)."""
    def measure() -> float:
        from importlib.resources import files

        import numpy as np

        from medrecon.datasets import take_slab
        from medrecon.io import load_volume
        from medrecon.methods import run_method
        from medrecon.metrics import psnr
        from medrecon.tasks import CTOptions, MRIOptions, simulate, to_volume_units

        data = files("medrecon") / "data"
        if name == "chest-ct":
            v = take_slab(load_volume(str(data / "lung2_slab.nii.gz")), 10, 14)
            m = simulate(v, "sparse-view-ct", seed=0, ct=CTOptions(views=8))
            steps, data_range = 20, 2000.0                         # the [-1000, 1000] HU window
        else:
            v = take_slab(load_volume(str(data / "brain2_slab.nii.gz")), 10, 12)
            m = simulate(v, "cs-mri", seed=0, mri=MRIOptions(acceleration=4))
            steps, data_range = 10, float(np.percentile(np.abs(v.array), 99.9))
        x = to_volume_units(run_method(m, "dds", {"prior": name, "steps": steps, "seed": 0}), m)
        return psnr(np.abs(x), np.abs(v.array), data_range)
    return measure


def _cases() -> dict[str, GoldenCase]:
    from regression_cases import CASES as CLASSICAL

    cases = [GoldenCase(n, _classical(n), 0.05, f"classical {CLASSICAL[n][2]} on Shepp-Logan "
                        f"({CLASSICAL[n][0]}, {CLASSICAL[n][1]}); tests/regression_cases.py")
             for n in CLASSICAL]
    cases += [
        GoldenCase("dds-phantom-sv8-20nfe", _dds_phantom(), 0.1,
                   "DDS, phantom prior, 8 views, ADMM-TV warm start (default), 20 NFE", "phantom"),
        GoldenCase("dds-phantom-sv8-20nfe-from-noise", _dds_phantom(start_sigma=0.0), 0.1,
                   "DDS, phantom prior, 8 views, from noise (published), 20 NFE", "phantom"),
        GoldenCase("cli-fbp-sv8", lambda: cli_psnr("fbp"), 0.05,
                   "medrecon reconstruct --method fbp, 8 views, held-out ellipsoids"),
        GoldenCase("cli-dds-phantom-sv8", lambda: cli_psnr("dds", "steps=10"), 0.1,
                   "medrecon reconstruct --method dds --prior phantom --set steps=10", "phantom"),
        GoldenCase("cli-mbir-phantom-sv8", lambda: cli_psnr("mbir", "steps=20", "sigma_max=5"), 0.1,
                   "medrecon reconstruct --method mbir --prior phantom --set steps=20 "
                   "sigma_max=5", "phantom"),
        GoldenCase("dds-chest-ct-sv8", _data_prior("chest-ct"), 0.1,
                   "DDS, chest-ct prior, 4 held-out lung2 slices, 8 views, 20 NFE", "chest-ct",
                   slow=True),
        GoldenCase("dds-brain-mri-x4", _data_prior("brain-mri"), 0.1,
                   "DDS, brain-mri prior, 2 held-out brain2 slices, x4 uniform 1D, 10 NFE",
                   "brain-mri", slow=True),
    ]
    return {c.name: c for c in cases}


CASES = _cases()


# --------------------------------------------------------------------------------------------
# Provenance and the file
# --------------------------------------------------------------------------------------------
def prior_digest(name: str) -> str:
    """SHA-256 of a shipped prior's inference weights (what a diffusion golden depends on)."""
    from medrecon.prior.checkpoint import read_card, resolve

    directory = resolve(name)
    weights = directory / read_card(directory)["weights"]["ema"]
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def versions() -> dict[str, str]:
    """medrecon's git revision (``+dirty`` with local changes) and the numerical libraries."""
    import astra
    import numpy
    import scipy
    import torch

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    rev = git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "medrecon"))
    return {"medrecon": rev + ("+dirty" if dirty else ""), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "astra": str(astra.__version__)}


def load(path: Path = GOLDEN_FILE) -> dict:
    """The golden file (``{"format", "cases": {name: entry}}``)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    assert doc.get("format") == FORMAT, f"{path} is not a {FORMAT} file"
    return doc


def entry_for(name: str, value: float, extra_versions: Optional[dict] = None) -> dict:
    """The golden-file entry of case ``name`` measured as ``value`` now."""
    case = CASES[name]
    return {"value": round(float(value), 3), "tolerance": case.tolerance, "unit": "dB PSNR",
            "what": case.what, "command": f"{REGENERATE} --only {name}",
            "versions": {**versions(), **(extra_versions or {})},
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "prior": None if case.prior is None else {"name": case.prior,
                                                      "sha256": prior_digest(case.prior)}}


def check(name: str, value: float, path: Path = GOLDEN_FILE) -> None:
    """Assert that ``value`` is within the golden's tolerance (both ways); a golden measured
    with other prior weights than the shipped ones fails with the command to regenerate it."""
    import pytest

    cases = load(path)["cases"]
    if name not in cases:
        pytest.fail(f"no golden value for {name}; run {REGENERATE} --only {name}")
    g = cases[name]
    if g["prior"] is not None:
        now = prior_digest(g["prior"]["name"])
        if now != g["prior"]["sha256"]:
            pytest.fail(f"golden {name} was measured with other weights of the "
                        f"{g['prior']['name']} prior ({g['prior']['sha256'][:12]}, shipped now: "
                        f"{now[:12]}); regenerate: {REGENERATE} --prior {g['prior']['name']}")
    assert abs(value - g["value"]) <= g["tolerance"], (
        f"{name}: measured {value:.3f} dB, golden {g['value']:.3f} +/- {g['tolerance']} dB "
        f"({g['date']}, {g['versions']['medrecon'][:12]}); a gain is a change too: if it is "
        f"intended, regenerate with {REGENERATE} --only {name}")
