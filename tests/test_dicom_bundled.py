"""Real DICOM files bundled with pydicom (offline): CT/MR geometry and compressed transfer
syntaxes decoded through the pylibjpeg plugins."""

import shutil

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medrecon.errors import DataError
from medrecon.io import load_volume


def _bundled(name):
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def test_ct_small_hu_and_geometry():
    v = load_volume(_bundled("CT_small.dcm"))
    assert v.modality == "CT" and v.units == "HU" and v.shape == (1, 128, 128)
    assert v.spacing[1:] == pytest.approx((0.661468, 0.661468))
    np.testing.assert_allclose(v.affine[:3, 3], [-158.135803, -179.035797, -75.699997])
    import pydicom
    ds = pydicom.dcmread(_bundled("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(v.array[0], expected)
    assert v.source["PatientID"] == str(ds.PatientID)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_compressed_mr_equals_uncompressed(name):
    ref = load_volume(_bundled("MR_small.dcm"))
    v = load_volume(_bundled(name))
    assert v.modality == "MR" and v.units == "a.u."
    np.testing.assert_array_equal(v.array, ref.array)
    np.testing.assert_allclose(v.affine, ref.affine)


@pytest.mark.parametrize("name,shape", [("JPEG2000.dcm", (1, 1024, 256)),
                                        ("693_J2KI.dcm", (1, 512, 512)),
                                        ("JPEGLSNearLossless_08.dcm", (1, 45, 10)),
                                        ("JPEGLSNearLossless_16.dcm", (1, 50, 10)),
                                        ("JPGExtended.dcm", (1, 1024, 256))])
def test_lossy_and_extended_syntaxes_equal_pydicoms_rescaled_pixels(name, shape):
    """Every pixel equals pydicom's own decoding times RescaleSlope plus RescaleIntercept
    (693_J2KI is a CT with intercept -1024; the others have no rescale, i.e. 1 and 0)."""
    import pydicom

    v = load_volume(_bundled(name))
    ds = pydicom.dcmread(_bundled(name))
    slope, icpt = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    expected = ds.pixel_array.astype(np.float64) * slope + icpt
    assert v.shape == shape and expected.std() > 0
    np.testing.assert_array_equal(v.array[0], expected.astype(np.float32))
    if name == "693_J2KI.dcm":
        assert v.units == "HU" and icpt == -1024.0 and float(v.array.min()) < -1000


def test_bundled_truncated_file_named(tmp_path):
    shutil.copy(_bundled("MR_small.dcm"), tmp_path / "good.dcm")
    shutil.copy(_bundled("MR_truncated.dcm"), tmp_path / "MR_truncated.dcm")
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path)
    msg = str(exc.value)
    # both files share one SeriesInstanceUID and position: the truncated one must be named
    assert f"{tmp_path / 'MR_truncated.dcm'} is truncated" in msg


def test_non_image_dicom_is_not_a_series(tmp_path):
    shutil.copy(_bundled("CT_small.dcm"), tmp_path / "ct.dcm")
    shutil.copy(_bundled("rtplan.dcm"), tmp_path / "plan.dcm")
    v = load_volume(tmp_path)  # the RT plan has no image and is ignored
    assert v.shape == (1, 128, 128)
