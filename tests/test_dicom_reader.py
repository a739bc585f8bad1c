"""DICOM series reader on synthetic series (tests/dicom_factory.py): order, geometry, checks."""

import logging
import shutil

import numpy as np
import pytest

from dicom_factory import (oblique_iop, phantom_hu, truncate, write_enhanced_ct, write_series)
from medrecon.errors import DataError, UserError
from medrecon.io import load_volume, scan_dicom


@pytest.fixture
def vol():
    return phantom_hu((6, 12, 10), seed=1)


def _slice_positions(v):
    return np.array([(v.affine @ [k, 0, 0, 1])[:3] for k in range(v.shape[0])])


def test_shuffled_files_sorted_by_position_not_name_or_instance(tmp_path, vol):
    paths = write_series(tmp_path / "s", vol, spacing=(2.5, 0.5, 0.75), seed=3)
    names_order = sorted(paths, key=lambda p: p.name)
    assert names_order != paths  # file names really are shuffled
    v = load_volume(tmp_path / "s")
    assert v.modality == "CT" and v.units == "HU"
    np.testing.assert_array_equal(v.array, vol)
    assert v.spacing == pytest.approx((2.5, 0.5, 0.75))
    np.testing.assert_allclose(v.affine[:3, 3], [-10.0, -20.0, 30.0])
    assert v.source["PatientID"] == "MEDRECON-TEST"
    assert [str(p) for p in paths] == v.source["files"]


def test_oblique_orientation_affine_matches_every_slice(tmp_path, vol):
    iop = oblique_iop(30.0)
    paths = write_series(tmp_path / "o", vol, iop=iop, spacing=(1.5, 0.5, 0.5))
    v = load_volume(tmp_path / "o")
    np.testing.assert_array_equal(v.array, vol)
    from dicom_factory import read_header
    ipps = np.array([[float(x) for x in read_header(p).ImagePositionPatient] for p in paths])
    np.testing.assert_allclose(_slice_positions(v), ipps, atol=1e-5)
    np.testing.assert_allclose(v.affine[:3, 2] / 0.5, iop[:3], atol=1e-7)  # x = row direction
    np.testing.assert_allclose(v.affine[:3, 1] / 0.5, iop[3:], atol=1e-7)  # y = column dir


def test_reversed_positions_still_ascend_along_normal(tmp_path, vol):
    write_series(tmp_path / "r", vol, positions=np.arange(6)[::-1] * 2.0)
    v = load_volume(tmp_path / "r")
    np.testing.assert_array_equal(v.array, vol[::-1])
    assert v.affine[2, 0] == pytest.approx(2.0)


def test_rescale_slope_intercept_applied(tmp_path, vol):
    write_series(tmp_path / "s", vol, slope=0.5, intercept=-1000.0)
    v = load_volume(tmp_path / "s")
    np.testing.assert_allclose(v.array, vol, atol=0.25)


def test_two_series_require_a_choice(tmp_path, vol):
    write_series(tmp_path / "d", vol, description="first", series_number=2, prefix="A")
    write_series(tmp_path / "d" / "sub", vol[:3] + 5, description="second", series_number=3,
                 prefix="B")
    with pytest.raises(UserError) as exc:
        load_volume(tmp_path / "d")
    msg = str(exc.value)
    assert "2 series" in msg and "--series" in msg and "'first'" in msg and "'second'" in msg
    assert "[0]" in msg and "[1]" in msg and "6 file(s)" in msg and "3 file(s)" in msg
    scan = scan_dicom(tmp_path / "d")
    second = load_volume(tmp_path / "d", series=scan.series[1].uid)
    np.testing.assert_array_equal(second.array, vol[:3] + 5)
    np.testing.assert_array_equal(load_volume(tmp_path / "d", series=0).array, vol)
    np.testing.assert_array_equal(load_volume(tmp_path / "d", series="1").array, vol[:3] + 5)
    with pytest.raises(UserError, match="out of range"):
        load_volume(tmp_path / "d", series=5)
    with pytest.raises(UserError, match="no series with SeriesInstanceUID 1.2.3"):
        load_volume(tmp_path / "d", series="1.2.3")


def test_list_of_files_input(tmp_path, vol):
    paths = write_series(tmp_path / "s", vol)
    v = load_volume([str(p) for p in paths[::-1]])
    np.testing.assert_array_equal(v.array, vol)


def test_missing_slice_names_neighbours(tmp_path, vol):
    paths = write_series(tmp_path / "m", vol, skip=(3,))
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "m")
    msg = str(exc.value)
    assert "missing slices" in msg and "1 slice(s) between" in msg
    assert str(paths[2]) in msg and str(paths[3]) in msg  # paths[3] is the file of z = 4


def test_missing_slice_interpolated_when_allowed(tmp_path, vol, caplog):
    write_series(tmp_path / "m", vol, skip=(3,))
    with caplog.at_level(logging.WARNING, logger="medrecon.io.dicom"):
        v = load_volume(tmp_path / "m", allow_incomplete=True)
    assert v.shape == vol.shape and v.source["interpolated_slices"] == [3]
    np.testing.assert_array_equal(v.array[[0, 1, 2, 4, 5]], vol[[0, 1, 2, 4, 5]])
    np.testing.assert_allclose(v.array[3], (vol[2] + vol[4]) / 2)
    assert "filled by linear interpolation" in caplog.text


def test_duplicate_position_names_both_files(tmp_path, vol):
    paths = write_series(tmp_path / "d", vol, positions=[0, 2, 4, 4, 6, 8])
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "d")
    msg = str(exc.value)
    assert "duplicate slice position" in msg and str(paths[2]) in msg and str(paths[3]) in msg


def test_identical_copy_of_a_file_is_used_once(tmp_path, vol, caplog):
    paths = write_series(tmp_path / "c", vol)
    shutil.copy(paths[2], tmp_path / "c" / "copy_of_slice.dcm")
    with caplog.at_level(logging.WARNING, logger="medrecon.io.dicom"):
        v = load_volume(tmp_path / "c")
    np.testing.assert_array_equal(v.array, vol)
    assert "copy_of_slice.dcm" in caplog.text and "repeats SOPInstanceUID" in caplog.text


def test_non_uniform_spacing_reported_and_tolerance_option(tmp_path, vol):
    paths = write_series(tmp_path / "n", vol, positions=[0, 2, 4, 6.3, 8.3, 10.3])
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "n")
    msg = str(exc.value)
    assert "non-uniform slice spacing" in msg and "2.3 mm" in msg
    assert str(paths[2]) in msg and str(paths[3]) in msg
    v = load_volume(tmp_path / "n", spacing_tolerance=0.2)  # 15% deviation accepted
    assert v.shape == vol.shape


def test_stray_non_dicom_file_named(tmp_path, vol):
    write_series(tmp_path / "s", vol)
    stray = tmp_path / "s" / "notes.txt"
    stray.write_text("scanner notes")
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "s")
    msg = str(exc.value)
    assert str(stray) in msg and "is not a DICOM file" in msg and "--allow-incomplete" in msg
    np.testing.assert_array_equal(load_volume(tmp_path / "s", allow_incomplete=True).array, vol)


def test_truncated_file_named(tmp_path, vol):
    paths = write_series(tmp_path / "t", vol)
    truncate(paths[4], drop_bytes=100)  # inside the 240 bytes of pixel data
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "t")
    msg = str(exc.value)
    assert f"{paths[4]} is truncated" in msg
    v = load_volume(tmp_path / "t", allow_incomplete=True)
    np.testing.assert_array_equal(v.array[:4], vol[:4])
    assert v.source["interpolated_slices"] == [4]


def test_file_truncated_inside_header_named(tmp_path, vol):
    paths = write_series(tmp_path / "h", vol)
    truncate(paths[0], 0.05)
    truncate(paths[1], 0.3)
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "h")
    msg = str(exc.value)
    assert f"{paths[0]} is not a DICOM file (only" in msg and "empty or truncated" in msg
    assert f"{paths[1]} is truncated or damaged: a CT Image Storage object" in msg


def test_image_without_pixel_data_named(tmp_path, vol):
    import pydicom
    paths = write_series(tmp_path / "p", vol)
    ds = pydicom.dcmread(paths[1])
    del ds.PixelData
    ds.save_as(paths[1])
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "p")
    assert str(paths[1]) in str(exc.value) and "has no pixel data" in str(exc.value)


def test_mixed_sizes_named(tmp_path, vol):
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_series(tmp_path / "x", vol[:3], series_uid=uid, prefix="A")
    other = phantom_hu((3, 8, 10), seed=2)
    small = write_series(tmp_path / "x", other, series_uid=uid, prefix="B",
                         positions=[6.0, 8.0, 10.0])
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "x")
    msg = str(exc.value)
    assert "mixed image sizes" in msg and "12x10" in msg and "8x10" in msg
    assert str(small[0]) in msg


def test_mixed_orientations_named(tmp_path, vol):
    uid = "1.2.826.0.1.3680043.8.498.2"
    write_series(tmp_path / "x", vol[:3], series_uid=uid, prefix="A")
    tilted = write_series(tmp_path / "x", vol[3:], series_uid=uid, prefix="B",
                          iop=oblique_iop(10), positions=[6.0, 8.0, 10.0])
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "x")
    msg = str(exc.value)
    assert "mixed orientations" in msg and str(tilted[0]) in msg


def test_missing_geometry_in_multi_file_series_named(tmp_path, vol):
    import pydicom
    paths = write_series(tmp_path / "g", vol)
    ds = pydicom.dcmread(paths[2])
    del ds.ImagePositionPatient
    ds.save_as(paths[2])
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "g")
    assert "without ImagePositionPatient" in str(exc.value) and str(paths[2]) in str(exc.value)


def test_gantry_tilt_detected_and_geometry_exact(tmp_path, vol, caplog):
    paths = write_series(tmp_path / "t", vol, tilt_deg=12.0)
    with caplog.at_level(logging.WARNING, logger="medrecon.io.dicom"):
        v = load_volume(tmp_path / "t")
    assert "gantry tilt of 12.00 degrees" in caplog.text and str(paths[0]) in caplog.text
    assert v.source["gantry_tilt_deg"] == pytest.approx(12.0, abs=1e-3)
    np.testing.assert_array_equal(v.array, vol)
    from dicom_factory import read_header
    ipps = np.array([[float(x) for x in read_header(p).ImagePositionPatient] for p in paths])
    np.testing.assert_allclose(_slice_positions(v), ipps, atol=1e-5)


def test_no_image_series_found(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"no DICOM image series found.*a\.txt is not a DICOM"):
        load_volume(tmp_path / "e")


def test_folder_of_nifti_files_gets_a_hint(tmp_path):
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "brain.nii.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(DataError, match=r"for NIfTI input pass the file itself.*brain\.nii\.gz"):
        load_volume(tmp_path / "n")


def test_nonexistent_input(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_volume(tmp_path / "nope")


def test_enhanced_multiframe_ct_with_shuffled_frames(tmp_path, vol):
    path = write_enhanced_ct(tmp_path / "enh.dcm", vol, spacing=(1.25, 0.5, 0.5),
                             iop=oblique_iop(15), frame_order=[3, 1, 0, 5, 2, 4])
    v = load_volume(path)
    assert v.modality == "CT" and v.units == "HU"
    np.testing.assert_array_equal(v.array, vol)
    assert v.spacing == pytest.approx((1.25, 0.5, 0.5))
    np.testing.assert_allclose(v.affine[:3, 3], [-10.0, -20.0, 30.0], atol=1e-5)


def test_enhanced_multiframe_per_frame_rescale_overrides_the_shared_one(tmp_path, vol):
    """Each frame carries its own slope and intercept (shared: slope 1, intercept -1024); the
    values are the stored integers times the frame's slope plus the frame's intercept."""
    rescale = [(0.5, -1000.0), (2.0, -1024.0), (1.0, -512.0), (0.25, -900.0), (3.0, -1100.0),
               (1.0, -1024.0)]                                   # per z index
    path = write_enhanced_ct(tmp_path / "enh.dcm", vol, frame_order=[3, 1, 0, 5, 2, 4],
                             frame_rescale=rescale)
    v = load_volume(path)
    expected = np.stack([np.rint((vol[k] - b) / a) * a + b for k, (a, b) in enumerate(rescale)])
    assert not np.array_equal(expected, vol)                     # slopes 2 and 3 round HU values
    np.testing.assert_array_equal(v.array, expected.astype(np.float32))


def test_compressed_series_rle_and_jpeg2000(tmp_path):
    import pydicom
    from pydicom.uid import JPEG2000Lossless, RLELossless
    vol = phantom_hu((4, 40, 36), seed=4)  # JPEG 2000 needs tiles larger than its levels
    paths = write_series(tmp_path / "c", vol)
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless if i % 2 else JPEG2000Lossless)
        ds.save_as(p)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == JPEG2000Lossless
    v = load_volume(tmp_path / "c")
    np.testing.assert_array_equal(v.array, vol)


def test_undecodable_compressed_pixel_data_named(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless
    vol = phantom_hu((4, 8, 8), seed=5)
    paths = write_series(tmp_path / "j", vol)
    ds = pydicom.dcmread(paths[2])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([bytes(range(200))])
    ds["PixelData"].VR = "OB"
    ds.save_as(paths[2])
    with pytest.raises(DataError) as exc:
        load_volume(tmp_path / "j")
    msg = str(exc.value)
    assert f"{paths[2]}: pixel data could not be decoded (transfer syntax JPEG 2000" in msg
    v = load_volume(tmp_path / "j", allow_incomplete=True)
    assert v.source["interpolated_slices"] == [2] and v.source["skipped_files"] == [str(paths[2])]
    np.testing.assert_array_equal(v.array[[0, 1, 3]], vol[[0, 1, 3]])
