"""Hostile input through the real command line (``medrecon.cli.main``), one case per row.

Every refused case must: exit with code 2; print exactly one ``medrecon CMD: error: ...`` line,
last, naming the file and the problem, and no traceback; leave the case's folder exactly as it
was (same files, same checksums: no output, no partial output, no temporary or lock file, inputs
untouched). Accepted cases (valid files medrecon used to reject) check what was read.
The generators are in tests/hostile_inputs.py; the counts are in the module's CASES table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

import hostile_inputs as H
from medrecon.cli import main


@dataclass
class Base:
    """Shared, valid inputs (never modified; cases copy what they need)."""

    root: Path
    ph: Path        # phantom NIfTI [4, 32, 32]
    ct: Path        # sparse-view CT measurement of ph
    mr: Path        # 4-coil CS-MRI measurement of ph
    ct128: Path     # CT measurement of a [2, 128, 128] phantom (the shipped priors' size)
    ph128: Path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    d = tmp_path_factory.mktemp("base")
    assert main(["phantom", "--shape", "4", "32", "32", "--output", str(d / "ph.nii.gz")]) == 0
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "24", "--input",
                 str(d / "ph.nii.gz"), "--output", str(d / "ct.h5")]) == 0
    assert main(["simulate", "--task", "cs-mri", "--coils", "4", "--input", str(d / "ph.nii.gz"),
                 "--output", str(d / "mr.h5")]) == 0
    assert main(["phantom", "--shape", "2", "128", "128", "--output", str(d / "ph128.nii.gz")]) == 0
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "16", "--input",
                 str(d / "ph128.nii.gz"), "--output", str(d / "ct128.h5")]) == 0
    return Base(d, d / "ph.nii.gz", d / "ct.h5", d / "mr.h5", d / "ct128.h5", d / "ph128.nii.gz")


@contextlib.contextmanager
def working_directory(path: Optional[Path]):
    old = os.getcwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run(capsys, argv: list[str], cwd: Optional[Path] = None) -> tuple[int, str, str]:
    capsys.readouterr()
    with working_directory(cwd):
        rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_refused(rc: int, err: str, words: list[str]) -> str:
    """Exit 2, one error line (the last line), naming every one of ``words``, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    assert "Traceback" not in err and not any(ln.startswith("  File ") for ln in lines), err
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    for w in words:
        assert w in errors[0], f"{w!r} not in {errors[0]!r}"
    return errors[0]


# -- the cases --------------------------------------------------------------------------------------
# A builder prepares files under d ("in/" inputs, outputs aimed at "out/") and returns
# (argv, words the error line must contain, working directory or None).
Builder = Callable[[Path, Base], tuple[list, list, Optional[Path]]]


def _nan_nifti(d, b):
    f = H.nifti_with(d / "in" / "nan.nii.gz", np.nan)
    return ["simulate", "--task", "sparse-view-ct", "--input", f, "--output", d / "out" / "m.h5"], \
        ["nan.nii.gz", "non-finite", "NaN"], None


def _inf_nifti(d, b):
    f = H.nifti_with(d / "in" / "inf.nii", np.inf)
    return ["simulate", "--task", "cs-mri", "--input", f, "--output", d / "out" / "m.h5"], \
        ["inf.nii", "non-finite", "Inf"], None


def _nan_nrrd(d, b):
    f = H.nrrd_with_nan(d / "in" / "v.nrrd")
    return ["simulate", "--task", "sparse-view-ct", "--input", f, "--output", d / "out" / "m.h5"], \
        ["v.nrrd", "NaN"], None


def _nan_sinogram(d, b):
    from medrecon.io.measurements import load_measurement
    data = load_measurement(b.ct).data.copy()
    data[0, 3, 7] = np.nan
    f = H.copy_measurement(b.ct, d / "in" / "nan.h5", data=data)
    return ["reconstruct", "--input", f, "--method", "fbp", "--output", d / "out" / "r.nii.gz"], \
        ["nan.h5", "'data'", "NaN"], None


def _inf_kspace(d, b):
    from medrecon.io.measurements import load_measurement
    data = load_measurement(b.mr).data.copy()
    data[1, 0, 3, 3] = np.inf
    f = H.copy_measurement(b.mr, d / "in" / "k.h5", data=data)
    return ["reconstruct", "--input", f, "--method", "sense", "--output", d / "out" / "r.nii.gz"], \
        ["k.h5", "Inf"], None


def _nan_coil_maps(d, b):
    from medrecon.io.measurements import load_measurement
    maps = load_measurement(b.mr).arrays["coil_maps"].copy()
    maps[2, 10, 10] = np.nan
    f = H.copy_measurement(b.mr, d / "in" / "maps.h5", arrays={"coil_maps": maps})
    return ["reconstruct", "--input", f, "--method", "sense", "--output", d / "out" / "r.nii.gz"], \
        ["maps.h5", "coil_maps", "NaN"], None


def _nan_reference(d, b):
    from medrecon.io.measurements import load_measurement
    ref = load_measurement(b.ct).arrays["reference"].copy()
    ref[0, 0, 0] = np.nan
    f = H.copy_measurement(b.ct, d / "in" / "ref.h5", arrays={"reference": ref})
    return ["reconstruct", "--input", f, "--method", "fbp", "--output", d / "out" / "r.nii.gz"], \
        ["ref.h5", "reference", "NaN"], None


def _inf_recon_evaluate(d, b):
    (d / "in").mkdir(parents=True)
    shutil.copy(b.ph, d / "in" / "ref.nii.gz")
    bad = H.nifti_with(d / "in" / "rec.nii.gz", np.inf)
    return ["evaluate", "--reference", d / "in" / "ref.nii.gz", "--recon", bad, "--json",
            d / "out" / "m.json"], ["rec.nii.gz", "Inf"], None


def _zero_mask(d, b):
    from medrecon.io.measurements import load_measurement
    mask = np.zeros_like(load_measurement(b.mr).arrays["mask"])
    f = H.copy_measurement(b.mr, d / "in" / "mask.h5", arrays={"mask": mask})
    return ["reconstruct", "--input", f, "--method", "sense", "--output", d / "out" / "r.nii.gz"], \
        ["mask.h5", "samples no k-space point"], None


def _fastmri_nan(d, b):
    k = H.noise_free_kspace()
    k[0, 1, 2, 3] = np.nan
    f = H.fastmri(d / "in" / "fm.h5", k)
    return ["reconstruct", "--input", f, "--method", "zero-filled", "--output",
            d / "out" / "r.nii.gz"], ["fm.h5", "kspace", "NaN"], None


def _dds_with_damaged_prior(d, b, **damage):
    """``(argv, prior folder)``: 2-step DDS on the 128x128 CT measurement with a copy of the
    prior damaged by ``damage`` (see ``hostile_inputs.prior_copy``)."""
    (d / "in").mkdir(parents=True)
    prior = H.prior_copy(d / "in" / "prior", **damage)
    shutil.copy(b.ct128, d / "in" / "ct.h5")
    return ["reconstruct", "--input", d / "in" / "ct.h5", "--method", "dds", "--prior", prior,
            "--set", "steps=2", "--output", d / "out" / "r.nii.gz"], prior


def _nan_prior(d, b):
    argv, _ = _dds_with_damaged_prior(d, b, poison="nan")
    return argv, ["ema.safetensors", "non-finite", "NaN"], None


def _prior_window_mismatch(d, b):
    (d / "in").mkdir(parents=True)
    prior = H.prior_copy(d / "in" / "prior", window=[0.0, 0.02])
    shutil.copy(b.ct128, d / "in" / "ct.h5")
    return ["reconstruct", "--input", d / "in" / "ct.h5", "--method", "dds", "--prior", prior,
            "--set", "steps=2", "--output", d / "out" / "r.nii.gz"], \
        ["does not fit this measurement", "[0.0, 0.02]"], None


def _prior_weights_escape(d, b):
    (d / "in").mkdir(parents=True)
    other = H.prior_copy(d / "in" / "other")
    prior = H.prior_copy(d / "in" / "prior", weights_path=str(other / "ema.safetensors"))
    shutil.copy(b.ct128, d / "in" / "ct.h5")
    return ["reconstruct", "--input", d / "in" / "ct.h5", "--method", "dds", "--prior", prior,
            "--set", "steps=2", "--output", d / "out" / "r.nii.gz"], \
        ["model_card.json", "weights path", "inside the prior directory"], None


def _h5_zero_slices(d, b):
    f = H.raw_measurement(d / "in" / "z.h5", "sparse-view-ct", np.zeros((0, 24, 46), np.float32))
    return ["reconstruct", "--input", f, "--method", "fbp", "--output", d / "out" / "r.nii.gz"], \
        ["z.h5", "empty", "0 slices"], None


def _h5_data_group(d, b):
    f = H.raw_measurement(d / "in" / "g.h5", "sparse-view-ct", None, data_as_group=True)
    return ["reconstruct", "--input", f, "--method", "fbp", "--output", d / "out" / "r.nii.gz"], \
        ["g.h5", "'data'", "group"], None


def _fastmri_kspace_group(d, b):
    f = H.fastmri(d / "in" / "fg.h5", as_group=True)
    return ["reconstruct", "--input", f, "--method", "zero-filled", "--output",
            d / "out" / "r.nii.gz"], ["fg.h5", "'kspace'", "group"], None


def _coil_count_mismatch(d, b):
    from medrecon.physics.mri import birdcage_maps
    k = H.noise_free_kspace((2, 8, 32, 32))
    maps = birdcage_maps(3, (32, 32)).numpy()
    f = H.raw_measurement(d / "in" / "c.h5", "cs-mri", k,
                          {"coil_maps": maps, "mask": np.ones((32, 32), np.uint8)},
                          {"image_shape": [32, 32], "n_coils": 8})
    return ["reconstruct", "--input", f, "--method", "sense", "--output", d / "out" / "r.nii.gz"], \
        ["c.h5", "coil_maps", "8 coils"], None


def _huge_ct_image_shape(d, b):
    from medrecon.io.measurements import load_measurement
    m = load_measurement(b.ct)
    geometry = dict(m.geometry, image_shape=[100000, 100000])
    f = H.copy_measurement(b.ct, d / "in" / "huge.h5", geometry=geometry, drop=("reference",))
    return ["reconstruct", "--input", f, "--method", "fbp", "--output", d / "out" / "r.nii.gz"], \
        ["huge.h5", "100000 x 100000", "of memory", "refusing before allocating"], None


def _huge_mri_image_shape(d, b):
    from medrecon.io.measurements import load_measurement
    m = load_measurement(b.mr)
    f = H.copy_measurement(b.mr, d / "in" / "huge.h5",
                           geometry=dict(m.geometry, image_shape=[100000, 100000]))
    return ["reconstruct", "--input", f, "--method", "sense", "--output", d / "out" / "r.nii.gz"], \
        ["huge.h5", "image_shape [100000, 100000]", "k-space matrix"], None


def _huge_nifti_header(d, b):
    f = H.nifti_huge_header(d / "in" / "huge.nii")
    return ["simulate", "--task", "sparse-view-ct", "--input", f, "--output", d / "out" / "m.h5"], \
        ["huge.nii", "of memory"], None


def _output_under_a_file(d, b):
    (d / "in").mkdir(parents=True)
    (d / "in" / "notes.txt").write_text("a file, not a folder")
    return ["reconstruct", "--input", b.ct, "--method", "fbp", "--output",
            d / "in" / "notes.txt" / "r.nii.gz"], ["notes.txt is a file, not a folder"], None


def _bad_vr_alone(d, b):
    src = H.pydicom_file("badVR.dcm")
    if src is None:
        pytest.skip("badVR.dcm is not bundled with this pydicom")
    (d / "in").mkdir(parents=True)
    f = Path(shutil.copy(src, d / "in" / "badVR.dcm"))
    return ["simulate", "--task", "sparse-view-ct", "--input", f, "--output", d / "out" / "m.h5"], \
        ["badVR.dcm", "invalid NumberOfFrames '1A'"], None


def _jpeg_lossy(d, b):
    src = H.pydicom_file("JPEG-lossy.dcm")
    if src is None:
        pytest.skip("JPEG-lossy.dcm is not bundled with this pydicom")
    (d / "in").mkdir(parents=True)
    f = Path(shutil.copy(src, d / "in" / "JPEG-lossy.dcm"))
    return ["simulate", "--task", "sparse-view-ct", "--input", f, "--output", d / "out" / "m.h5"], \
        ["JPEG-lossy.dcm", "could not be decoded", "JPEG Extended"], None


def _text_named_h5(d, b):
    (d / "in").mkdir(parents=True)
    (d / "in" / "notes.h5").write_text("not HDF5")
    return ["info", d / "in" / "notes.h5"], ["notes.h5", "not an HDF5 file"], None


def _text_named_h5_as_volume(d, b):
    (d / "in").mkdir(parents=True)
    (d / "in" / "vol.h5").write_text("not HDF5")
    return ["simulate", "--task", "sparse-view-ct", "--input", d / "in" / "vol.h5", "--output",
            d / "out" / "m.h5"], ["vol.h5", "not one"], None


def _train_h5(d, b):
    (d / "in").mkdir(parents=True)
    shutil.copy(b.ct, d / "in" / "x.h5")
    return ["train", "--config", _recipe(d), "--data", d / "in" / "x.h5", "--output",
            d / "out" / "prior"], ["x.h5", "reconstruct --input"], None


def _recipe(d: Path) -> Path:
    path = d / "in" / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("steps: 2\nbatch_size: 2\ncheckpoint_every: 1\nval_every: 1\n"
                    "network: {image_size: 32, channels: [8, 8], attention_levels: [false, false],"
                    " num_res_blocks: 1, norm_num_groups: 4}\n")
    return path


def _train_2d(d, b):
    f = H.nifti(d / "in" / "slice.nii.gz", H.phantom_array((1, 32, 32)))
    return ["train", "--config", _recipe(d), "--data", f, "--output", d / "out" / "prior"], \
        ["slice.nii.gz", "single slice"], None


def _train_zero(d, b):
    f = H.nifti(d / "in" / "zero.nii.gz", np.zeros((4, 32, 32), np.float32))
    return ["train", "--config", _recipe(d), "--data", f, "--output", d / "out" / "prior"], \
        ["zero.nii.gz", "constant"], None


def _train_nan(d, b):
    f = H.nifti_with(d / "in" / "nan.nii.gz", np.nan)
    return ["train", "--config", _recipe(d), "--data", f, "--output", d / "out" / "prior"], \
        ["nan.nii.gz", "NaN"], None


def _train_inf(d, b):
    f = H.nifti_with(d / "in" / "inf.nii.gz", -np.inf)
    return ["train", "--config", _recipe(d), "--data", f, "--output", d / "out" / "prior"], \
        ["inf.nii.gz", "Inf"], None


def _train_steps0(d, b):
    f = H.nifti(d / "in" / "v.nii.gz", H.phantom_array())
    return ["train", "--config", _recipe(d), "--data", f, "--output", d / "out" / "prior",
            "--steps", "0"], ["steps", "positive integer"], None


def _existing_output(d, b):
    (d / "out").mkdir(parents=True)
    (d / "out" / "r.nii.gz").write_bytes(b"someone else's result")
    return ["reconstruct", "--input", b.ct, "--method", "sirt", "--output", d / "out" / "r.nii.gz"], \
        ["r.nii.gz", "already exists"], None


def _dicom_out_not_empty(d, b):
    (d / "out" / "dcm").mkdir(parents=True)
    (d / "out" / "dcm" / "keep.txt").write_text("mine")
    return ["reconstruct", "--input", b.ct, "--method", "fbp", "--output", d / "out" / "r.nii.gz",
            "--dicom-out", d / "out" / "dcm"], ["dcm", "not empty"], None


def _dicom_out_foreign_files_overwrite(d, b):
    (d / "out" / "dcm").mkdir(parents=True)
    (d / "out" / "dcm" / "keep.txt").write_text("mine")
    return ["reconstruct", "--input", b.ct, "--method", "fbp", "--output", d / "out" / "r.nii.gz",
            "--dicom-out", d / "out" / "dcm", "--overwrite"], ["keep.txt", "did not write"], None


def _dicom_study(d: Path) -> Path:
    from dicom_factory import phantom_hu, write_series
    study = d / "in" / "study"
    write_series(study, phantom_hu((4, 32, 32)), spacing=(2.0, 1.0, 1.0))
    return study


def _study_measurement(d: Path) -> Path:
    study = _dicom_study(d)
    m = d / "in" / "m.h5"
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "16", "--input", str(study),
                 "--output", str(m)]) == 0
    return m


def _dicom_out_in_study_other_cwd(d, b):
    m = _study_measurement(d)
    (d / "elsewhere").mkdir()
    # relative paths from another working directory: ../in/study/derived
    return ["reconstruct", "--input", m, "--method", "fbp", "--output", "../out/r.nii.gz",
            "--dicom-out", "../in/study/derived"], ["inside the input folder", "study"], \
        d / "elsewhere"


def _output_in_study(d, b):
    m = _study_measurement(d)
    return ["reconstruct", "--input", m, "--method", "fbp", "--output",
            d / "in" / "study" / "r.nii.gz"], ["inside the input folder", "study"], None


def _simulate_into_study(d, b):
    study = _dicom_study(d)
    return ["simulate", "--task", "sparse-view-ct", "--input", study, "--output", study / "m.h5"], \
        ["m.h5", "inside the input folder"], None


def _output_is_reference(d, b):
    (d / "in").mkdir(parents=True)
    ref = Path(shutil.copy(b.ph, d / "in" / "r.nii.gz"))
    return ["reconstruct", "--input", b.ct, "--method", "fbp", "--reference", ref, "--output", ref,
            "--overwrite"], ["r.nii.gz", "is the input --reference"], None


def _output_is_input_via_symlink(d, b):
    (d / "in").mkdir(parents=True)
    ref = Path(shutil.copy(b.ph, d / "in" / "r.nii.gz"))
    (d / "out").mkdir()
    (d / "out" / "link.nii.gz").symlink_to(ref)
    return ["reconstruct", "--input", b.ct, "--method", "fbp", "--reference", ref, "--output",
            d / "out" / "link.nii.gz", "--overwrite"], ["link.nii.gz", "is the input"], None


def _output_dir_links_into_study(d, b):
    m = _study_measurement(d)
    (d / "out").mkdir()
    (d / "out" / "via").symlink_to(d / "in" / "study")
    return ["reconstruct", "--input", m, "--method", "fbp", "--output",
            d / "out" / "via" / "r.nii.gz"], ["inside the input folder"], None


def _simulate_onto_input_volume(d, b):
    (d / "in").mkdir(parents=True)
    shutil.copy(b.ph, d / "in" / "v.h5")  # a NIfTI named .h5, then asked to overwrite itself
    return ["simulate", "--task", "sparse-view-ct", "--input", d / "in" / "v.h5", "--output",
            d / "in" / "v.h5", "--overwrite"], ["v.h5"], None


def _reference_wrong_shape(d, b):
    (d / "in").mkdir(parents=True)
    ref = H.nifti(d / "in" / "small.nii.gz", H.phantom_array((4, 16, 16)))
    return ["reconstruct", "--input", b.ct, "--method", "fbp", "--reference", ref, "--output",
            d / "out" / "r.nii.gz", "--dicom-out", d / "out" / "dcm"], \
        ["small.nii.gz", "shape"], None


def _reference_other_geometry(d, b):
    (d / "in").mkdir(parents=True)
    aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    ref = H.nifti(d / "in" / "flipped.nii.gz", H.phantom_array(), aff)
    return ["reconstruct", "--input", b.ct, "--method", "fbp", "--reference", ref, "--output",
            d / "out" / "r.nii.gz"], ["flipped.nii.gz", "flipped or rotated"], None


def _evaluate_flipped(d, b):
    (d / "in").mkdir(parents=True)
    a = H.phantom_array()
    ref = H.nifti(d / "in" / "a.nii.gz", a)
    flip = H.nifti(d / "in" / "b.nii.gz", a[:, :, ::-1].copy(), np.diag([-1.0, 1.0, 1.0, 1.0]))
    return ["evaluate", "--reference", ref, "--recon", flip, "--json", d / "out" / "m.json"], \
        ["b.nii.gz", "different voxel grids"], None


def _state_dir_without_resume(d, b):
    (d / "in" / "state").mkdir(parents=True)
    (d / "in" / "state" / "state.json").write_text("{}")
    return ["reconstruct", "--input", b.ct128, "--method", "dds", "--set", "steps=2", "--state-dir",
            d / "in" / "state", "--output", d / "out" / "r.nii.gz"], ["state", "--resume"], None


MANIFEST = ("schema: medrecon-manifest/1\nname: t\ntitle: t\ndescription: t\nmodality: CT\n"
            "licence: {name: x, terms: none}\nobtain: {instructions: x}\n"
            "checksums: user-supplied\npreprocessing: []\nfiles:\n")


def _pin_missing(d, b):
    (d / "in" / "root").mkdir(parents=True)
    (d / "in" / "root" / "a.bin").write_bytes(b"a")
    man = d / "in" / "m.yaml"
    man.write_text(MANIFEST + "  - {path: a.bin, sha256: null}\n  - {path: b.bin, sha256: null}\n")
    return ["data", "pin", man, "--root", d / "in" / "root", "--out", d / "out" / "p.yaml"], \
        ["b.bin", "missing"], None


def _pin_escaping(d, b):
    (d / "in" / "root").mkdir(parents=True)
    (d / "in" / "secret.bin").write_bytes(b"s")
    (d / "in" / "root" / "a.bin").symlink_to(d / "in" / "secret.bin")
    man = d / "in" / "m.yaml"
    man.write_text(MANIFEST + "  - {path: a.bin, sha256: null}\n")
    return ["data", "pin", man, "--root", d / "in" / "root", "--out", d / "out" / "p.yaml"], \
        ["a.bin", "out of the root"], None


def _real_valued_kspace(d, b):
    """k-space stored as float32: the phase is gone; reconstructing it would be a silent wrong result."""
    from medrecon.io.measurements import load_measurement
    m = load_measurement(b.mr)
    f = H.raw_measurement(d / "in" / "realk.h5", "cs-mri", np.abs(m.data).astype(np.float32), m.arrays,
                          m.geometry, m.attrs)
    return ["reconstruct", "--input", f, "--method", "sense", "--output", d / "out" / "r.nii.gz"], \
        ["realk.h5", "float32", "complex"], None


def _uncreatable_output_folder(option: str) -> Builder:
    def build(d, b):
        return ["reconstruct", "--input", b.ct, "--method", "fbp", "--output", d / "out" / "r.nii.gz",
                option, f"/proc/medrecon-nope/x.{'json' if option == '--json' else 'html'}"], \
            [option, "/proc/medrecon-nope", "cannot create"], None
    return build


def _complex_nifti_simulate(d, b):
    a = H.phantom_array().astype(np.complex64) * np.exp(0.3j)
    f = H.nifti(d / "in" / "cplx.nii.gz", a)
    return ["simulate", "--task", "cs-mri", "--input", f, "--output", d / "out" / "m.h5"], \
        ["--input", "cplx.nii.gz", "complex"], None


def _prior_other_family(d, b):
    argv, prior = _dds_with_damaged_prior(d, b, family="adm")
    return argv, [str(prior / "model_card.json"), "'adm'"], None


def _no_prior_fits(d, b):
    """dds without --prior on MR data whose pixels no shipped MR prior covers: refused, the
    choices listed (never a silent fallback to another prior)."""
    return ["reconstruct", "--input", b.mr, "--method", "dds", "--set", "steps=2", "--output",
            d / "out" / "r.nii.gz"], ["no shipped prior fits MR data at 1 mm pixels", "brain-mri (MR, 1.302-2.4 mm",
                                      "--prior"], None


def _simulate_option(option: str, value: str, words: list) -> Builder:
    def build(d, b):
        return ["simulate", "--task", "cs-mri", "--input", b.ph, option, value, "--output",
                d / "out" / "m.h5"], words, None
    return build


def _setting(method: str, setting: str, words: list) -> Builder:
    def build(d, b):
        return ["reconstruct", "--input", b.ct, "--method", method, "--set", setting, "--output",
                d / "out" / "r.nii.gz"], words, None
    return build


CASES: dict[str, Builder] = {
    # non-finite values at every entry point
    "nan-nifti": _nan_nifti, "inf-nifti": _inf_nifti, "nan-nrrd": _nan_nrrd,
    "nan-sinogram": _nan_sinogram, "inf-kspace": _inf_kspace, "nan-coil-maps": _nan_coil_maps,
    "nan-stored-reference": _nan_reference, "inf-recon-evaluate": _inf_recon_evaluate,
    "zero-mask": _zero_mask, "nan-fastmri": _fastmri_nan, "nan-prior-weights": _nan_prior,
    "prior-window-mismatch": _prior_window_mismatch, "train-nan": _train_nan,
    "train-inf": _train_inf,
    # damaged or inconsistent files: one line, not a traceback
    "h5-zero-slices": _h5_zero_slices, "h5-data-group": _h5_data_group,
    "fastmri-kspace-group": _fastmri_kspace_group, "coil-count-mismatch": _coil_count_mismatch,
    "huge-ct-image-shape": _huge_ct_image_shape, "huge-mri-image-shape": _huge_mri_image_shape,
    "huge-nifti-header": _huge_nifti_header, "bad-vr-alone": _bad_vr_alone,
    "jpeg-lossy": _jpeg_lossy, "text-named-h5-info": _text_named_h5,
    "text-named-h5-volume": _text_named_h5_as_volume, "train-h5": _train_h5, "train-2d": _train_2d,
    "train-all-zero": _train_zero, "train-steps-0": _train_steps0,
"prior-weights-escape": _prior_weights_escape,
    # outputs: checked before work, never an input, never inside an input study
    "output-under-a-file": _output_under_a_file, "existing-output": _existing_output,
    "dicom-out-not-empty": _dicom_out_not_empty,
    "dicom-out-foreign-files": _dicom_out_foreign_files_overwrite,
    "dicom-out-in-study-other-cwd": _dicom_out_in_study_other_cwd,
    "output-in-study": _output_in_study, "simulate-into-study": _simulate_into_study,
    "output-is-reference": _output_is_reference, "output-symlink-to-input": _output_is_input_via_symlink,
    "output-dir-links-into-study": _output_dir_links_into_study,
    "simulate-onto-input": _simulate_onto_input_volume, "reference-wrong-shape": _reference_wrong_shape,
    "reference-other-geometry": _reference_other_geometry, "evaluate-flipped": _evaluate_flipped,
    "state-dir-without-resume": _state_dir_without_resume,
    # smaller
    "pin-missing": _pin_missing, "pin-escaping": _pin_escaping,
    # non-finite or impossible options
    "simulate-sigma-nan": _simulate_option("--sigma", "nan", ["--sigma", "finite"]),
    "simulate-huge-size": _simulate_option("--size", "100000", ["100000 x 100000", "of memory"]),
    "setting-nan": _setting("tv", "lam_rel=nan", ["lam_rel", "finite"]),
    "setting-negative": _setting("tv", "rho_rel=-1", ["rho_rel", ">= 0"]),
    # issue 22
    "real-valued-kspace": _real_valued_kspace,
    "json-folder-uncreatable": _uncreatable_output_folder("--json"),
    "report-folder-uncreatable": _uncreatable_output_folder("--report"),
    "complex-nifti-simulate": _complex_nifti_simulate, "prior-other-family": _prior_other_family,
    "dds-no-prior-fits": _no_prior_fits,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_with_one_line_and_nothing_written(name, base, tmp_path, capsys) -> None:
    d = tmp_path / "case"
    d.mkdir()
    argv, words, cwd = CASES[name](d, base)
    before = H.tree_checksums(d)
    base_before = H.tree_checksums(base.root)
    rc, _, err = run(capsys, argv, cwd)
    assert_refused(rc, err, words)
    assert H.tree_checksums(d) == before, "the case folder changed (output, temporary or input)"
    assert H.tree_checksums(base.root) == base_before


# -- correct files that used to be rejected or misread ---------------------------------------------
def _load(capsys, caplog, path, tmp_path):
    """Simulate from ``path`` through the CLI (must succeed); the volume as loaded and what was
    reported (stderr and medrecon's log records, which pytest captures separately)."""
    caplog.set_level("WARNING")
    rc, _, err = run(capsys, ["simulate", "--task", "sparse-view-ct", "--input", path,
                              "--output", tmp_path / "m.h5"])
    assert rc == 0, err
    from medrecon.io import load_volume
    return load_volume(path), err + caplog.text


def test_deflated_transfer_syntax_loads(tmp_path, capsys, caplog) -> None:
    src = H.pydicom_file("image_dfl.dcm")
    if src is None:
        pytest.skip("image_dfl.dcm is not bundled")
    import pydicom
    v, err = _load(capsys, caplog, src, tmp_path)
    assert "truncated" not in err
    np.testing.assert_array_equal(v.array[0], pydicom.dcmread(src).pixel_array.astype(np.float32))


def test_multiframe_rt_dose_geometry(tmp_path, capsys, caplog) -> None:
    src = H.pydicom_file("rtdose.dcm")
    if src is None:
        pytest.skip("rtdose.dcm is not bundled")
    v, err = _load(capsys, caplog, src, tmp_path)
    assert v.shape == (15, 10, 10)
    assert v.spacing == pytest.approx((5.0, 10.0, 10.0))  # GridFrameOffsetVector steps 5 mm
    np.testing.assert_allclose(v.origin, [189.43125, 199.43125, -761.87])
    assert "no ImagePositionPatient" not in err


def test_oblique_series_with_rounded_positions_loads_with_a_warning(tmp_path, capsys, caplog) -> None:
    from dicom_factory import oblique_iop, phantom_hu, write_series
    write_series(tmp_path / "s", phantom_hu((12, 12, 10)), spacing=(7.02, 0.9, 0.9),
                 iop=oblique_iop(23.0), ipp_decimals=1)
    v, err = _load(capsys, caplog, tmp_path / "s", tmp_path)
    assert "uniform 7.02" in err and "rounded ImagePositionPatient" in err, err
    assert v.spacing[0] == pytest.approx(7.02, abs=0.02)


@pytest.mark.parametrize("positions,words", [
    (np.concatenate([np.arange(6) * 5.0, 25 + np.arange(1, 7) * 5.5]), "non-uniform"),  # 5 then 5.5 mm
    (np.r_[np.arange(6) * 5.0, 27.0 + np.arange(6) * 5.0], "non-uniform"),  # one 7 mm gap
    (np.r_[np.arange(6) * 5.0, 35.0 + np.arange(6) * 5.0], "missing slices"),  # one slice missing
])
def test_real_gaps_and_variable_spacing_still_refused(tmp_path, capsys, positions, words) -> None:
    from dicom_factory import phantom_hu, write_series
    write_series(tmp_path / "s", phantom_hu((12, 12, 10)), spacing=(5.0, 0.9, 0.9), positions=positions)
    before = H.tree_checksums(tmp_path)
    rc, _, err = run(capsys, ["simulate", "--task", "sparse-view-ct", "--input", tmp_path / "s",
                              "--output", tmp_path / "m.h5"])
    assert_refused(rc, err, [words, str(tmp_path / "s")])
    assert H.tree_checksums(tmp_path) == before


def test_bad_file_in_a_folder_is_skipped_and_named(tmp_path, capsys, caplog) -> None:
    src, good = H.pydicom_file("badVR.dcm"), H.pydicom_file("CT_small.dcm")
    if src is None or good is None:
        pytest.skip("pydicom test files not bundled")
    (tmp_path / "s").mkdir()
    shutil.copy(src, tmp_path / "s" / "badVR.dcm")
    shutil.copy(good, tmp_path / "s" / "ct.dcm")
    v, err = _load(capsys, caplog, tmp_path / "s", tmp_path)
    assert v.shape == (1, 128, 128)
    assert "badVR.dcm has an invalid NumberOfFrames" in err and "Traceback" not in err


def test_a_refusal_prints_its_error_line_alone(tmp_path, capsys) -> None:
    """pydicom warns about the bad VR; medrecon's one error line says it: nothing before it."""
    src = H.pydicom_file("badVR.dcm")
    if src is None:
        pytest.skip("badVR.dcm not bundled")
    rc, _, err = run(capsys, ["info", src])
    line = assert_refused(rc, err, ["badVR.dcm"])
    assert [ln for ln in err.splitlines() if ln.strip()] == [line]


def test_library_warnings_shown_once_in_medrecon_words_when_the_command_goes_on(tmp_path, capsys) -> None:
    """A library warning about input that is used anyway is shown, once, in medrecon's words."""
    import warnings

    from medrecon.library_messages import captured
    with captured("medrecon info") as collector:
        for _ in range(3):
            warnings.warn("pydicom could not read a tag, see https://pydicom.github.io", UserWarning)
        assert collector.pending  # held back while the inputs are read
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "reports" in ln]
    assert len(lines) == 1 and lines[0].startswith("medrecon info: warning: ") and "https://" not in lines[0]


def test_a_damaged_rows_header_is_reported_by_info(tmp_path, capsys) -> None:
    bad = H.dicom_with_huge_rows(tmp_path / "s")
    rc, out, err = run(capsys, ["info", tmp_path / "s"])
    assert rc == 0, err
    problem = [ln for ln in out.splitlines() if "unusable" in ln]
    assert len(problem) == 1 and bad.name in problem[0] and "Rows 65535" in problem[0], out


def test_oblique_rounded_series_warns_once_and_reports_no_tilt(tmp_path, capsys, caplog) -> None:
    from dicom_factory import oblique_iop, phantom_hu, write_series
    write_series(tmp_path / "s", phantom_hu((12, 12, 10)), spacing=(7.02, 0.9, 0.9),
                 iop=oblique_iop(37.0), ipp_decimals=1)
    caplog.set_level("WARNING")
    rc, out, err = run(capsys, ["info", tmp_path / "s", "--series", "0"])
    assert rc == 0, err
    text = err + caplog.text
    assert text.count("rounded ImagePositionPatient") == 1, text
    assert "tilt" not in text and "tilt" not in out, (text, out)


def test_non_image_object_is_described(tmp_path, capsys) -> None:
    src = H.pydicom_file("test-SR.dcm")
    if src is None:
        pytest.skip("test-SR.dcm not bundled")
    rc, out, err = run(capsys, ["info", src])
    assert rc == 0 and "Comprehensive SR Storage, modality SR" in out and "?" not in out


# -- metrics and JSON ----------------------------------------------------------------------------------
def _strict_json(path: Path):
    def no_constant(token):
        raise AssertionError(f"{path} holds the non-standard JSON token {token}")
    return json.loads(path.read_text(), parse_constant=no_constant)


def test_identical_volumes_score_exact_not_inf(base, tmp_path, capsys) -> None:
    rc, out, err = run(capsys, ["evaluate", "--reference", base.ph, "--recon", base.ph, "--json",
                                tmp_path / "m.json"])
    assert rc == 0, err
    doc = _strict_json(tmp_path / "m.json")
    assert doc["psnr"] is None and doc["identical"] is True
    assert "inf" not in out.lower() and "nan" not in out.lower() and "exact" in out


def test_every_json_written_is_standard(base, tmp_path, capsys) -> None:
    rc, _, err = run(capsys, ["reconstruct", "--input", base.ct, "--method", "sirt", "--set",
                              "iterations=3", "--output", tmp_path / "r.nii.gz"])
    assert rc == 0, err
    for name in ("r.config.json", "r.metrics.json"):
        _strict_json(tmp_path / name)


def test_fastmri_without_maps_and_an_empty_slice_reconstructs(tmp_path, capsys) -> None:
    """Noise-free k-space without coil maps whose first slice holds no signal (the phantom's
    edge): ESPIRiT's maps of that slice are 0/0; it borrows its neighbour's, and SENSE works."""
    from medrecon.io import load_volume
    from medrecon.metrics import psnr
    k = H.noise_free_kspace((3, 4, 32, 32))
    k[0] = 0
    truth = H.phantom_array((3, 32, 32))
    truth[0] = 0
    f = H.fastmri(tmp_path / "fm.h5", k)
    rc, _, err = run(capsys, ["reconstruct", "--input", f, "--method", "sense", "--output",
                              tmp_path / "r.nii.gz"])
    assert rc == 0, err
    x = load_volume(tmp_path / "r.nii.gz").array
    assert np.abs(x[0]).max() < 1e-6
    assert psnr(x[1:], truth[1:], 1.0) > 30.0


# -- outputs through the CLI: modes, stale temporaries -------------------------------------------------
@pytest.mark.parametrize("umask,file_mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(base, tmp_path, capsys, umask, file_mode) -> None:
    import stat
    old = os.umask(umask)
    try:
        rc, _, err = run(capsys, ["reconstruct", "--input", base.ct, "--method", "fbp", "--output",
                                  tmp_path / "new" / "r.nii.gz", "--dicom-out", tmp_path / "dcm"])
    finally:
        os.umask(old)
    assert rc == 0, err
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for name in ("r.nii.gz", "r.config.json", "r.metrics.json"):
        assert mode(tmp_path / "new" / name) == file_mode
    assert mode(tmp_path / "new") == mode(tmp_path / "dcm") == 0o777 & ~umask
    assert {mode(p) for p in (tmp_path / "dcm").iterdir()} == {file_mode}


def test_next_run_removes_what_a_killed_run_left(base, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    (out / ".r.nii.gz.medrecon-0badc0de.tmp").mkdir(parents=True)        # a staging folder
    (out / ".r.nii.gz.medrecon-0badc0de.tmp" / "r.nii.gz").write_bytes(b"half")
    (out / ".r.config.json.medrecon-12345678.tmp.json").write_text("{")  # an atomic temporary
    (out / ".r.nii.gz.medrecon-lock").write_text("pid 1")                 # a dead run's lock
    (out / ".other.nii.gz.medrecon-0badc0de.tmp.nii.gz").write_bytes(b"not this run's")
    rc, _, err = run(capsys, ["reconstruct", "--input", base.ct, "--method", "fbp", "--output",
                              out / "r.nii.gz"])
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        ".other.nii.gz.medrecon-0badc0de.tmp.nii.gz", "r.config.json", "r.metrics.json", "r.nii.gz"]


def test_a_diverged_method_writes_nothing(base, tmp_path, capsys, monkeypatch) -> None:
    """Whatever a method returns, NaN never reaches a file or a score."""
    import torch

    import medrecon.methods as methods
    real = methods.CLASSICAL["sirt"]
    monkeypatch.setitem(methods.CLASSICAL, "sirt",
                        lambda m, op, y, s, p, slab=None: real(m, op, y, s, p, slab) * torch.nan)
    rc, _, err = run(capsys, ["reconstruct", "--input", base.ct, "--method", "sirt", "--output",
                              tmp_path / "out" / "r.nii.gz", "--dicom-out", tmp_path / "out" / "dcm"])
    assert_refused(rc, err, ["sirt reconstruction", "ct.h5", "NaN", "diverged"])
    assert list(tmp_path.iterdir()) == []


def test_undecodable_file_says_it_once(tmp_path, capsys) -> None:
    """pydicom logs a traceback per failed decoder plugin before raising: the one error line
    carries every plugin's reason, and nothing else is printed."""
    src = H.pydicom_file("JPEG-lossy.dcm")
    if src is None:
        pytest.skip("JPEG-lossy.dcm not bundled")
    rc, _, err = run(capsys, ["simulate", "--task", "sparse-view-ct", "--input", src, "--output",
                              tmp_path / "m.h5"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    line = assert_refused(rc, err, ["JPEG-lossy.dcm", "libjpeg", "Pillow"])
    assert lines == [line]
