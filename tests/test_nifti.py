"""NIfTI read/write: array and affine round trips, LPS <-> RAS, DICOM -> NIfTI geometry."""

import nibabel as nib
import numpy as np
import pytest

from dicom_factory import oblique_iop, phantom_hu, write_series
from medrecon.errors import DataError, UserError
from medrecon.io import load_volume, save_volume
from medrecon.io.nifti import lps_zyx_to_ras_ijk, ras_ijk_to_lps_zyx
from medrecon.volume import Volume


def test_round_trip_array_affine_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    aff = np.eye(4)
    aff[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0] * [2.0, 0.5, 0.8]
    aff[:3, 3] = [10.0, -5.0, 3.0]
    v = Volume(rng.normal(size=(4, 6, 5)).astype(np.float32), spacing=(2.0, 0.5, 0.8),
               affine=aff, modality="CT", units="HU", window=(-100.0, 300.0),
               source={"PatientID": "p1", "StudyInstanceUID": "1.2.3"}, description="x")
    for name in ("v.nii", "v.nii.gz"):
        save_volume(v, tmp_path / name)
        w = load_volume(tmp_path / name)
        np.testing.assert_array_equal(w.array, v.array)
        np.testing.assert_allclose(w.affine, v.affine, atol=1e-6)
        assert (w.modality, w.units, w.window, w.description) == ("CT", "HU", (-100, 300), "x")
        assert w.source["PatientID"] == "p1"


def test_ras_conversion_of_default_axial_volume(tmp_path):
    v = Volume.from_array(np.zeros((3, 4, 5)), spacing=(2.0, 1.0, 0.5))
    save_volume(v, tmp_path / "a.nii.gz")
    img = nib.load(tmp_path / "a.nii.gz")
    assert img.shape == (5, 4, 3)  # (x, y, z)
    # x -> patient left = -R, y -> posterior = -A, z -> superior = +S
    np.testing.assert_allclose(img.affine, np.diag([-0.5, -1.0, 2.0, 1.0]))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    a = np.arange(16.0).reshape(4, 4)
    a[3] = [0, 0, 0, 1]
    np.testing.assert_allclose(ras_ijk_to_lps_zyx(lps_zyx_to_ras_ijk(a)), a)


def test_dicom_to_nifti_points_agree(tmp_path):
    """A voxel's world position is the same through DICOM (LPS) and the NIfTI file (RAS)."""
    write_series(tmp_path / "s", phantom_hu((4, 8, 6)), iop=oblique_iop(35), spacing=(3, 0.5, 0.7))
    v = load_volume(tmp_path / "s")
    save_volume(v, tmp_path / "s.nii.gz")
    img = nib.load(tmp_path / "s.nii.gz")
    z, y, x = 3, 5, 2
    lps = (v.affine @ [z, y, x, 1])[:3]
    ras = (img.affine @ [x, y, z, 1])[:3]
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-5)
    assert np.asarray(img.dataobj)[x, y, z] == v.array[z, y, x]
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


def test_sheared_affine_kept_in_sform(tmp_path):
    write_series(tmp_path / "t", phantom_hu((4, 8, 6)), tilt_deg=20.0)
    v = load_volume(tmp_path / "t")
    save_volume(v, tmp_path / "t.nii.gz")
    w = load_volume(tmp_path / "t.nii.gz")
    np.testing.assert_allclose(w.affine, v.affine, atol=1e-5)
    assert int(nib.load(tmp_path / "t.nii.gz").header["qform_code"]) == 0


def test_foreign_nifti_defaults_and_4d_singleton(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])), tmp_path / "f.nii.gz")
    v = load_volume(tmp_path / "f.nii.gz")
    assert v.shape == (4, 3, 2) and v.modality == "OT" and v.units == "a.u."
    assert v.spacing == pytest.approx((3.0, 2.0, 1.0))
    assert v.array[3, 2, 1] == data[1, 2, 3, 0]


def test_bad_nifti_inputs_named(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file at all")
    with pytest.raises(DataError, match="broken.nii.gz is not a readable NIfTI"):
        load_volume(bad)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(DataError, match=r"t\.nii: expected a 3D volume"):
        load_volume(tmp_path / "t.nii")


def test_save_refuses_overwrite_and_wrong_extension(tmp_path):
    v = Volume.from_array(np.ones((2, 2, 2)))
    save_volume(v, tmp_path / "a.nii.gz")
    with pytest.raises(UserError, match="already exists"):
        save_volume(v, tmp_path / "a.nii.gz")
    save_volume(v.with_array(np.full((2, 2, 2), 5.0)), tmp_path / "a.nii.gz", overwrite=True)
    assert load_volume(tmp_path / "a.nii.gz").array.max() == 5.0
    with pytest.raises(UserError, match=r"\.nii or \.nii\.gz"):
        save_volume(v, tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]  # no temp files left
