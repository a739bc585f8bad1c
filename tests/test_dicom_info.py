"""`medrecon info` on DICOM folders, NIfTI files and measurement files."""

import json

import numpy as np

from dicom_factory import phantom_hu, write_series
from medrecon.cli import main
from medrecon.io import Measurement, load_volume, save_measurement, save_volume


def test_info_lists_series_geometry_and_problems(tmp_path, capsys):
    write_series(tmp_path / "d", phantom_hu((6, 12, 10)), description="first", series_number=2,
                 prefix="A", spacing=(2.5, 0.5, 0.5))
    write_series(tmp_path / "d" / "b", phantom_hu((3, 8, 8)), description="second",
                 series_number=3, prefix="B", tilt_deg=10.0)
    (tmp_path / "d" / "readme.txt").write_text("not dicom")
    assert main(["info", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "2 image series" in out and "'first'" in out and "'second'" in out
    assert "[Z, Y, X] = [6, 12, 10], spacing (dz, dy, dx) = (2.5, 0.5, 0.5) mm" in out
    assert "gantry tilt 10.00 deg" in out and "readme.txt is not a DICOM file" in out
    assert "--series" in out


def test_info_json_and_loading_a_series(tmp_path, capsys):
    write_series(tmp_path / "d", phantom_hu((4, 8, 8)), skip=(2,))
    assert main(["info", str(tmp_path / "d"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "dicom" and "missing slices" in report["series"][0]["geometry_error"]
    assert main(["info", str(tmp_path / "d"), "--series", "0", "--allow-incomplete"]) == 0
    out = capsys.readouterr().out
    assert "loaded series:" in out and "interpolated_slices: [2]" in out
    assert main(["info", str(tmp_path / "d"), "--series", "0"]) == 2
    assert "missing slices" in capsys.readouterr().err


def test_info_nifti_and_measurement(tmp_path, capsys):
    write_series(tmp_path / "d", phantom_hu((3, 8, 8)))
    save_volume(load_volume(tmp_path / "d"), tmp_path / "v.nii.gz")
    assert main(["info", str(tmp_path / "v.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "CT volume [Z, Y, X] = [3, 8, 8]" in out and "units HU" in out and "affine" in out
    save_measurement(tmp_path / "m.h5", Measurement("sparse-view-ct", np.zeros((3, 4, 12)),
                                                    {"kind": "parallel"}, attrs={"seed": 1}))
    assert main(["info", str(tmp_path / "m.h5")]) == 0
    out = capsys.readouterr().out
    assert "sparse-view-ct measurement: sinogram [Z, A, D] = [3, 4, 12]" in out
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
