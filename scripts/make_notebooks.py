#!/usr/bin/env python3
"""Write notebooks/*.ipynb from the cells below and execute them, so that they are stored with
their outputs (tables and figures read on a web page). The notebooks are generated: edit this
file, not the .ipynb files.

    .venv/bin/python scripts/make_notebooks.py            # write and execute both (a few minutes)
    .venv/bin/python scripts/make_notebooks.py --check    # are the stored notebooks this script's?

They read the sample data (``.venv/bin/python scripts/fetch_sample_data.py``) and write their
outputs under ``notebooks/output/``. CI executes them again (``pytest --nbmake notebooks``); the
checks live in ``tests/test_notebooks.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat as nbf

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

COMMON = '''import time
import warnings
from pathlib import Path

import numpy as np
import torch
from IPython.display import Image, Markdown, display

import medrecon                      # the Python API: load, simulate, reconstruct, evaluate, list_priors
from medrecon.io import save_volume
from medrecon.io.measurements import save_measurement
from medrecon.metrics import PLANES, measurement_convention
from medrecon.prior.checkpoint import read_card, resolve
from medrecon.provenance import provenance
from medrecon.report import figure_png_bytes, write_html_report
from medrecon.viz import comparison_figure, measurement_display

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
OUT = Path("output") / NAME
OUT.mkdir(parents=True, exist_ok=True)


def table(results, seconds):
    """Per-plane PSNR / SSIM as a Markdown table."""
    head = "| method | PSNR (dB) | SSIM | " + " | ".join(f"{p} PSNR / SSIM" for p in PLANES) + " | seconds |"
    rows = [head, "|---" * (4 + len(PLANES)) + "|"]
    for name, m in results.items():
        planes = " | ".join(f"{m['planes'][p]['psnr']:.2f} / {m['planes'][p]['ssim']:.3f}" for p in PLANES)
        rows.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | {planes} | {seconds[name]:.1f} |")
    return Markdown("\\n".join(rows))'''

RECONSTRUCT = '''recons, seconds = {}, {}
for name, settings in METHODS.items():
    start = time.perf_counter()
    recons[name] = medrecon.reconstruct(m, name, settings=settings)   # a Volume in the input's units
    seconds[name] = time.perf_counter() - start
    print(f"{name:12s} {seconds[name]:6.1f} s")'''

METRICS = '''results = {name: medrecon.evaluate(m, x) for name, x in recons.items()}   # m: its stored reference
print(results["dds"]["convention"]["description"])
display(table(results, seconds))'''

MASKED = '''masked = {name: medrecon.evaluate(m, x, mask="body") for name, x in recons.items()}
display(table(masked, seconds))'''

FIGURE = '''reference, card = m.arrays["reference"], read_card(resolve(PRIOR))
convention = measurement_convention(m, reference, card)
display_window = measurement_display(m, reference, WINDOW, card)
arrays = {name: x.array for name, x in recons.items()}
fig = comparison_figure(reference, arrays, display_window, slab.spacing, convention, affine=slab.affine,
                        title=TITLE)
display(Image(figure_png_bytes(fig, dpi=90)))'''

SAVE = '''for name, x in recons.items():
    save_volume(x, OUT / f"{name}.nii.gz", overwrite=True)
back = medrecon.load(OUT / "dds.nii.gz")
print(back.summary())
print("round trip exact:", np.array_equal(back.array, recons["dds"].array))
prov = provenance(seed=0, prior=PRIOR, command="notebooks/" + NAME + ".ipynb")
write_html_report(OUT / "report.html", overwrite=True, title=TITLE, metrics=results,
                  settings={k: v for k, v in METHODS.items()}, provenance=prov,
                  figure_png=figure_png_bytes(fig), seconds=seconds)
print(sorted(p.name for p in OUT.iterdir()))'''


def ct_notebook() -> nbf.NotebookNode:
    return _notebook([
        ("md", """# Sparse-view CT of a chest DICOM series: FBP, ADMM-TV and DDS

A scientist's run of medrecon on real data: read a chest CT **DICOM series**, take an 8-slice slab
at the shipped priors' 128 x 128, simulate an **8-view parallel-beam** scan, reconstruct it with
filtered backprojection, ADMM-TV and the decomposed diffusion sampler (DDS) with the shipped
`chest-ct` prior, and compare them slice by slice and plane by plane. The series is the sample
chest CT (fetch it once with `.venv/bin/python scripts/fetch_sample_data.py`); the slab lies in its
held-out part (files 1-41..1-64), which the prior never saw.

Generated and executed by `scripts/make_notebooks.py`; outputs go to `notebooks/output/ct/`."""),
        ("code", "NAME = \"ct\"\n" + COMMON),
        ("md", """## 1. Read the DICOM series

`medrecon.load` groups the files by series, sorts the slices along the slice normal, applies the
rescale (HU) and records the geometry. We keep slices 48-55 and resample them to 128 x 128 (the
affine keeps track of the new pixel size; `medrecon.simulate(..., slices=, size=)` does the same)."""),
        ("code", """from medrecon.datasets import chest_ct_dir, select_and_resample

volume = medrecon.load(chest_ct_dir())
print(volume.summary())
slab = select_and_resample(volume, "48:56", 128)
print(slab.summary())"""),
        ("md", """## 2. Simulate the measurement, write it, read it back

An 8-view sinogram of line integrals of the linear attenuation (HU converted with
mu_water = 0.0192 /mm), noiseless. The measurement file holds everything needed to rebuild the
operator; from here on only the file is used."""),
        ("code", """save_measurement(OUT / "meas.h5", medrecon.simulate(slab, "sparse-view-ct", seed=0, views=8),
                 overwrite=True)
m = medrecon.load(OUT / "meas.h5")
print(m.summary())"""),
        ("md", """## 3. Reconstruct

FBP (Hann filter), ADMM-TV (TV along z, the default settings) and DDS with the `chest-ct` prior
(50 steps, warm-started from ADMM-TV). Times are wall-clock on the machine that executed the
notebook."""),
        ("code", """PRIOR = "chest-ct"
METHODS = {"fbp": None, "tv": None, "dds": {"prior": PRIOR, "seed": 0}}
""" + RECONSTRUCT),
        ("md", """## 4. Per-plane metrics

medrecon's one convention: CT values mapped through the prior's HU window ([-1000, 1000] HU) to
[0, 1], data range 1 (i.e. 2000 HU). Per plane: the mean over the slices of that plane."""),
        ("code", METRICS),
        ("md", """Much of each slice is air outside the patient, which every method gets nearly right and which
lifts the averages. Inside a body mask (the reference above -500 HU, the lungs filled in):"""),
        ("code", MASKED),
        ("md", """## 5. Tri-planar views with error maps

Centre slices in the three planes at their physical aspect (the slab is 8 x 5 mm thick, so the
coronal and sagittal panels are stretched along z, as their titles say), shown through the
prior's HU window; below, the signed error `recon - reference` in HU on one scale for all
methods. Each panel states the PSNR/SSIM of that slice. Try `WINDOW = "soft-tissue"` or `"lung"`."""),
        ("code", """WINDOW = "prior"
TITLE = "8-view sparse-view CT, chest CT slab (8 slices)"
""" + FIGURE),
        ("md", """## 6. Save the volumes (NIfTI) and a report

The reconstructions go back to HU with the slab's geometry; the NIfTI files keep the modality,
units and window in a header extension. `report.html` holds the figure, the table, the settings
and the provenance (versions, git revision, prior weights hash)."""),
        ("code", SAVE),
    ])


def mri_notebook() -> nbf.NotebookNode:
    return _notebook([
        ("md", """# Multi-coil CS-MRI of a brain NIfTI: zero-filled, SENSE, ADMM-TV and DDS

Read a T1 brain volume from a **NIfTI file** (the MNI152 template, fetched by
`.venv/bin/python scripts/fetch_sample_data.py`), take 6 axial slices of its held-out test slab at
128 x 128, simulate **x4 uniform 1D undersampling with 8 coils**, reconstruct with zero-filling,
SENSE, ADMM-TV and DDS with the shipped `brain-mri` prior, and compare them plane by plane.

Generated and executed by `scripts/make_notebooks.py`; outputs go to `notebooks/output/mri/`."""),
        ("code", "NAME = \"mri\"\n" + COMMON),
        ("md", """## 1. Read the NIfTI file

The template is stored in RAS order; medrecon reads any orientation into `[Z, Y, X]` with an
affine to patient coordinates. The file records no modality or units (as files from dcm2niix or
Slicer do not): `modality="MR"` says what it is, like `--modality MR` on the command line.
`brain_mri_slab("test")` takes the held-out axial slices, pads them square and resamples them to
128 x 128; we keep six of them."""),
        ("code", """from medrecon.datasets import brain_mri_file, brain_mri_slab, take_slab

volume = medrecon.load(brain_mri_file(), modality="MR")
print(volume.summary())
slab = take_slab(brain_mri_slab("test"), 9, 15)
print(slab.summary())"""),
        ("md", """## 2. Simulate the k-space, write it, read it back

8 birdcage coils, a uniform 1D mask (every 4th phase-encode line plus 8 % fully sampled centre
lines), noiseless."""),
        ("code", """measurement = medrecon.simulate(slab, "cs-mri", seed=0, acceleration=4, mask="uniform1d", coils=8)
save_measurement(OUT / "meas.h5", measurement, overwrite=True)
m = medrecon.load(OUT / "meas.h5")
print(m.summary(), f"effective acceleration x{m.attrs['acceleration']:.2f}")"""),
        ("md", "## 3. Reconstruct"),
        ("code", """PRIOR = "brain-mri"
METHODS = {"zero-filled": None, "sense": None, "tv": None, "dds": {"prior": PRIOR, "seed": 0}}
""" + RECONSTRUCT),
        ("md", """## 4. Per-plane metrics

medrecon's convention for MR: magnitudes normalised by the reference's 99.9th percentile, data
range 1."""),
        ("code", METRICS),
        ("md", "Inside a body mask (the reference above 10 % of its range, holes filled):"),
        ("code", MASKED),
        ("md", """## 5. Tri-planar views with error maps

Magnitudes on a grey scale from the reference's minimum to its maximum; signed errors below.
Six 1 mm slices make a thin slab, so coronal and sagittal panels are stretched along z (stated in
their titles)."""),
        ("code", """WINDOW = "prior"   # CT only; MR is shown as magnitude
TITLE = "x4 multi-coil CS-MRI, brain test slab (6 slices)"
""" + FIGURE),
        ("md", "## 6. Save the volumes (NIfTI) and a report"),
        ("code", SAVE),
    ])


def _notebook(cells: list[tuple[str, str]]) -> nbf.NotebookNode:
    n = nbf.v4.new_notebook()
    n.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    n.metadata["language_info"] = {"name": "python"}
    return n


BUILDERS = {"compare_fbp.ipynb": ct_notebook, "cs_mri.ipynb": mri_notebook}


def sources(nb: nbf.NotebookNode) -> list[tuple[str, str]]:
    """What a notebook says, without its outputs: (cell type, source) per cell."""
    return [(c.cell_type, c.source) for c in nb.cells]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare the stored notebooks' cells with this script's")
    p.add_argument("--only", choices=sorted(BUILDERS), default=None, help="one notebook")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = p.parse_args(argv)
    names = [args.only] if args.only else sorted(BUILDERS)
    if args.check:
        stale = [n for n in names if sources(nbf.read(NOTEBOOKS / n, as_version=4)) != sources(BUILDERS[n]())]
        for n in stale:
            print(f"notebooks/{n} differs from scripts/make_notebooks.py; run it to regenerate", file=sys.stderr)
        return 1 if stale else 0
    from nbclient import NotebookClient

    for name in names:
        nb = BUILDERS[name]()
        NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        for cell in nb.cells:  # keep the stored file free of run-specific metadata
            cell.metadata.pop("execution", None)
        nbf.write(nb, NOTEBOOKS / name)
        print(f"wrote notebooks/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
