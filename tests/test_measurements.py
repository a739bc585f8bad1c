"""HDF5 measurement files and fastMRI-style k-space input."""

import h5py
import numpy as np
import pytest

from medrecon.errors import DataError, UserError
from medrecon.io import (Measurement, load_fastmri_kspace, load_measurement, save_measurement)


def _kspace(rng, shape=(3, 4, 16, 12)):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def test_sinogram_round_trip_with_geometry(tmp_path):
    rng = np.random.default_rng(0)
    sino = rng.normal(size=(2, 8, 23)).astype(np.float32)
    geom = {"kind": "parallel", "angles_deg": list(np.linspace(0, 180, 8, endpoint=False)),
            "detector_count": 23, "detector_spacing": 1.0}
    attrs = {"noise": {"kind": "gaussian", "sigma": 0.01}, "seed": 3, "window": [-1000, 1000],
             "units": "1/mm", "spacing": [2.0, 1.0, 1.0], "affine": np.eye(4).tolist()}
    m = Measurement("sparse-view-ct", sino, geom, {"reference": np.ones((2, 16, 16))}, attrs)
    save_measurement(tmp_path / "m.h5", m)
    r = load_measurement(tmp_path / "m.h5")
    assert r.task == "sparse-view-ct" and r.geometry == geom and r.attrs == attrs
    np.testing.assert_array_equal(r.data, sino)
    np.testing.assert_array_equal(r.arrays["reference"], np.ones((2, 16, 16)))


def test_kspace_round_trip_with_mask_and_maps(tmp_path):
    rng = np.random.default_rng(1)
    k = _kspace(rng)
    maps = _kspace(rng, (4, 16, 12))
    mask = (rng.uniform(size=(16, 12)) > 0.5).astype(np.float32)
    save_measurement(tmp_path / "k.h5", Measurement("cs-mri", k, {"kind": "sense"},
                                                    {"mask": mask, "coil_maps": maps}))
    r = load_measurement(tmp_path / "k.h5")
    assert r.data.dtype == np.complex64
    np.testing.assert_array_equal(r.data, k)
    np.testing.assert_array_equal(r.arrays["coil_maps"], maps)
    np.testing.assert_array_equal(r.arrays["mask"], mask)


def test_save_refuses_overwrite_and_non_json(tmp_path):
    m = Measurement("limited-angle-ct", np.zeros((1, 2, 3)))
    save_measurement(tmp_path / "m.h5", m)
    with pytest.raises(UserError, match="already exists"):
        save_measurement(tmp_path / "m.h5", m)
    with pytest.raises(UserError, match="not JSON-serialisable"):
        save_measurement(tmp_path / "n.h5", Measurement("sparse-view-ct", np.zeros((1, 2, 3)),
                                                        attrs={"x": object()}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]


def test_measurement_validates_shapes():
    with pytest.raises(ValueError, match=r"k-space \[Z, C, ky, kx\]"):
        Measurement("cs-mri", np.zeros((2, 3, 4), np.complex64))
    with pytest.raises(ValueError, match="real sinogram"):
        Measurement("sparse-view-ct", np.zeros((2, 3, 4), np.complex64))
    with pytest.raises(ValueError, match="task"):
        Measurement("pet", np.zeros((2, 3, 4)))


def test_not_a_medrecon_file_named(tmp_path):
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    with pytest.raises(DataError, match="notes.h5 is not an HDF5 file"):
        load_measurement(txt)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="other.h5 is not a medrecon measurement file"):
        load_measurement(tmp_path / "other.h5")
    with h5py.File(tmp_path / "nodata.h5", "w") as f:
        f.attrs["format"] = "medrecon-measurement/1"
        f.attrs["task"] = "cs-mri"
    with pytest.raises(DataError, match="nodata.h5: medrecon measurement file lacks the 'data'"):
        load_measurement(tmp_path / "nodata.h5")
    with pytest.raises(UserError, match="does not exist"):
        load_measurement(tmp_path / "missing.h5")


def _fastmri_file(path, rng, undersample=True):
    k = _kspace(rng, (5, 4, 16, 12))
    cols = np.ones(12, bool)
    if undersample:
        cols[[0, 1, 3, 7, 10, 11]] = False
        k[..., ~cols] = 0
    with h5py.File(path, "w") as f:
        f["kspace"] = k
        f["reconstruction_rss"] = np.abs(k[:, 0, :8, :8]).astype(np.float32)
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 0.5
        f["ismrmrd_header"] = (
            b'<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
            b"<encoding><encodedSpace><matrixSize><x>16</x><y>12</y><z>1</z></matrixSize>"
            b"<fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>"
            b"<reconSpace><matrixSize><x>8</x><y>8</y><z>1</z></matrixSize><fieldOfView_mm>"
            b"<x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace></encoding>"
            b"</ismrmrdHeader>")
    return k, cols


def test_fastmri_kspace_mask_from_nonzero_columns(tmp_path):
    k, cols = _fastmri_file(tmp_path / "file1000001.h5", np.random.default_rng(2))
    m = load_fastmri_kspace(tmp_path / "file1000001.h5", slices=[3, 1])
    assert m.task == "cs-mri" and m.data.shape == (2, 4, 16, 12)
    np.testing.assert_array_equal(m.data, k[[1, 3]])
    np.testing.assert_array_equal(m.arrays["mask"], np.broadcast_to(cols, (16, 12)))
    assert m.arrays["reference"].shape == (2, 8, 8) and "coil_maps" not in m.arrays
    assert m.attrs["fastmri_acquisition"] == "CORPD_FBK"
    assert m.attrs["recon_matrix"] == [8, 8, 1] and m.attrs["encoded_fov_mm"] == [280, 140, 4.5]
    full = load_measurement(tmp_path / "file1000001.h5")  # detected as fastMRI
    assert full.data.shape == (5, 4, 16, 12)


def test_fastmri_bad_inputs_named(tmp_path):
    with h5py.File(tmp_path / "nok.h5", "w") as f:
        f["image"] = np.zeros((2, 2))
    with pytest.raises(DataError, match="nok.h5 has no 'kspace' dataset"):
        load_fastmri_kspace(tmp_path / "nok.h5")
    with h5py.File(tmp_path / "real.h5", "w") as f:
        f["kspace"] = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(DataError, match="real.h5: dataset 'kspace' is float32"):
        load_fastmri_kspace(tmp_path / "real.h5")
    _fastmri_file(tmp_path / "ok.h5", np.random.default_rng(0))
    with pytest.raises(UserError, match=r"ok.h5: slice indices \[9\] out of range 0..4"):
        load_fastmri_kspace(tmp_path / "ok.h5", slices=[9])
