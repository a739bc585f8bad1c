"""Derived DICOM series: identity, geometry and HU round trip; safety of the output folder."""

import numpy as np
import pydicom
import pytest

from dicom_factory import oblique_iop, phantom_hu, write_series
from medrecon.errors import UserError
from medrecon.io import load_volume, write_dicom_series
from medrecon.volume import Volume


@pytest.fixture
def study(tmp_path):
    vol = phantom_hu((5, 12, 10), seed=7)
    write_series(tmp_path / "in", vol, iop=oblique_iop(20), spacing=(2.0, 0.6, 0.7))
    return vol, load_volume(tmp_path / "in")


def test_round_trip_within_1_hu_same_geometry_new_series(tmp_path, study):
    _, ref = study
    recon = ref.with_array(ref.array + np.float32(0.37) * np.sign(ref.array))
    files = write_dicom_series(recon, tmp_path / "out", reference=ref, method="dds",
                               task="sparse-view-ct")
    assert len(files) == 5 and all(f.parent == tmp_path / "out" for f in files)
    back = load_volume(tmp_path / "out")
    assert np.abs(back.array - recon.array).max() <= 0.5 + 1e-4
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-5)
    assert back.modality == "CT" and back.units == "HU"
    ds = pydicom.dcmread(files[0])
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.SeriesDescription == "medrecon dds sparse-view-ct"
    assert ds.PatientID == ref.source["PatientID"] and str(ds.PatientName) == "Test^Phantom"
    assert ds.StudyInstanceUID == ref.source["StudyInstanceUID"]
    assert ds.FrameOfReferenceUID == ref.source["FrameOfReferenceUID"]
    assert ds.SeriesInstanceUID != ref.source["SeriesInstanceUID"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.source["SeriesInstanceUID"]
    assert ds.pixel_array.dtype == np.int16 and ds.RescaleType == "HU"
    sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert len(sops) == 5
    in_sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
               for f in ref.source["files"]}
    assert not sops & in_sops


def test_window01_and_attenuation_volumes_written_in_hu(tmp_path, study):
    _, ref = study
    win = ref.to_window((-1000, 1000))
    write_dicom_series(win, tmp_path / "w", reference=ref, method="mbir", task="cs")
    np.testing.assert_allclose(load_volume(tmp_path / "w").array,
                               np.clip(ref.array, -1000, 1000), atol=0.51)
    write_dicom_series(ref.to_units("1/mm"), tmp_path / "mu", reference=ref, method="fbp",
                       task="t")
    np.testing.assert_allclose(load_volume(tmp_path / "mu").array, ref.array, atol=0.51)


def test_mr_volume_without_reference_uses_rescale(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.uniform(0, 3.7, (3, 8, 6)).astype(np.float32)
    v = Volume.from_array(arr, spacing=(3, 1, 1), modality="MR", units="a.u.")
    files = write_dicom_series(v, tmp_path / "mr", method="sense", task="cs-mri")
    back = load_volume(tmp_path / "mr")
    assert back.modality == "MR"
    assert np.abs(back.array - arr).max() <= 3.7 / 65000
    np.testing.assert_allclose(back.affine, v.affine, atol=1e-6)
    assert pydicom.dcmread(files[0]).PatientID == "ANONYMOUS"


def test_refuses_to_write_into_input_directory(tmp_path, study):
    _, ref = study
    before = sorted((p.name, p.stat().st_size) for p in (tmp_path / "in").iterdir())
    for target in (tmp_path / "in", tmp_path / "in" / "recon"):
        with pytest.raises(UserError, match="inside the input directory"):
            write_dicom_series(ref, target, reference=ref, method="fbp", task="t")
    with pytest.raises(UserError, match="contains the input directory"):
        write_dicom_series(ref, tmp_path, reference=ref, method="fbp", task="t")
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(UserError, match="inside the input directory"):
        write_dicom_series(ref, other / "x", method="fbp", task="t", input_dirs=[other])
    assert sorted((p.name, p.stat().st_size) for p in (tmp_path / "in").iterdir()) == before


def test_refuses_non_empty_output_unless_overwrite(tmp_path, study):
    _, ref = study
    out = tmp_path / "out"
    write_dicom_series(ref, out, reference=ref, method="fbp", task="t")
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        write_dicom_series(ref, out, reference=ref, method="fbp", task="t")
    shorter = Volume.from_array(ref.array[:2], spacing=ref.spacing, affine=ref.affine,
                                modality="CT", units="HU", source=ref.source)
    (out / "user_notes.txt").write_text("keep me")
    files = write_dicom_series(shorter, out, reference=ref, method="fbp", task="t",
                               overwrite=True)
    assert len(files) == 2
    # stale slices of the earlier medrecon series are gone, the user's file is kept
    assert sorted(p.name for p in out.iterdir()) == ["medrecon_00001.dcm",
                                                     "medrecon_00002.dcm", "user_notes.txt"]
    assert not list(tmp_path.glob(".out.*"))  # no temporary directory left behind


def test_failed_write_leaves_nothing(tmp_path, study, monkeypatch):
    _, ref = study
    calls = {"n": 0}
    real = pydicom.dataset.Dataset.save_as

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(ref, tmp_path / "out", reference=ref, method="fbp", task="t")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_left_handed_volume_keeps_every_voxel_position(tmp_path):
    # x -> L, y -> P, slices towards the feet: against the row x column normal (+S)
    aff = np.array([[0, 0, 1.0, 5.0], [0, 1.0, 0, 6.0], [-2.0, 0, 0, 7.0], [0, 0, 0, 1]])
    arr = phantom_hu((4, 6, 5), seed=3)
    v = Volume(arr, spacing=(2.0, 1.0, 1.0), affine=aff, modality="CT", units="HU")
    write_dicom_series(v, tmp_path / "o", method="fbp", task="t")
    back = load_volume(tmp_path / "o")
    np.testing.assert_array_equal(back.array, arr[::-1])
    for k in range(4):
        np.testing.assert_allclose(back.affine @ [k, 2, 3, 1], v.affine @ [3 - k, 2, 3, 1])


def test_dicom_in_nifti_and_dicom_out_chain(tmp_path, study):
    """The issue's 'done when': DICOM CT in, NIfTI and a derived DICOM series out."""
    from medrecon.io import save_volume
    hu, ref = study
    save_volume(ref, tmp_path / "ct.nii.gz")
    via_nifti = load_volume(tmp_path / "ct.nii.gz")
    write_dicom_series(via_nifti, tmp_path / "derived", reference=ref, method="fbp",
                       task="sparse-view-ct")
    out = load_volume(tmp_path / "derived")
    np.testing.assert_array_equal(out.array, hu)  # integer HU survive exactly
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    assert out.source["StudyInstanceUID"] == ref.source["StudyInstanceUID"]
