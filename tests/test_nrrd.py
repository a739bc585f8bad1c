"""NRRD input (pynrrd): geometry in LPS whatever the file's space, through load_volume; and
reslicing coronal stacks to axial without moving any voxel."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from medrecon.errors import DataError
from medrecon.io import load_volume
from medrecon.volume import Volume, reslice_axial

DIRS = np.array([[0.7, 0.0, 0.1], [0.0, -0.8, 0.0], [0.0, 0.0, 5.0]])   # rows: steps of axes i, j, k
ORIGIN = np.array([-100.0, 80.0, -30.0])


def _write(path, space: str, data: np.ndarray, dirs=DIRS, origin=ORIGIN) -> None:
    nrrd.write(str(path), data, {"space": space, "space directions": dirs, "space origin": origin,
                                 "kinds": ["domain"] * 3})


@pytest.mark.parametrize("space,flip", [("left-posterior-superior", (1, 1, 1)),
                                        ("right-anterior-superior", (-1, -1, 1))])
def test_voxel_positions_in_lps(tmp_path, space: str, flip) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)     # [i, j, k]
    _write(tmp_path / "v.nrrd", space, data)
    v = load_volume(tmp_path / "v.nrrd")
    assert v.shape == (4, 5, 6)                                           # [Z, Y, X] = [k, j, i]
    for i, j, k in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        assert v.array[k, j, i] == data[i, j, k]
        file_pos = ORIGIN + i * DIRS[0] + j * DIRS[1] + k * DIRS[2]       # in the file's space
        lps = np.asarray(flip) * file_pos
        np.testing.assert_allclose((v.affine @ [k, j, i, 1.0])[:3], lps, atol=1e-9)
    np.testing.assert_allclose(v.spacing, [5.0, 0.8, np.hypot(0.7, 0.1)])


def test_detached_header_and_errors(tmp_path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nrrd.write(str(tmp_path / "d.nhdr"), data, {"space": "left-posterior-superior", "space directions": np.eye(3),
                                                 "space origin": np.zeros(3)}, detached_header=True)
    v = load_volume(tmp_path / "d.nhdr")
    assert v.shape == (4, 3, 2) and v.array[3, 2, 1] == data[1, 2, 3]
    nrrd.write(str(tmp_path / "nospace.nrrd"), data)
    with pytest.raises(DataError, match="nospace.nrrd.*no 'space'"):
        load_volume(tmp_path / "nospace.nrrd")
    (tmp_path / "bad.nrrd").write_text("not a nrrd file")
    with pytest.raises(DataError, match="bad.nrrd"):
        load_volume(tmp_path / "bad.nrrd")


def test_reslice_coronal_to_axial_keeps_every_voxel() -> None:
    rng = np.random.default_rng(1)
    aff = np.array([[0, 0, -2.0, 10], [3.0, 0, 0, -5], [0, -2.0, 0, 7], [0, 0, 0, 1]])  # z->P, y->-S, x->-L
    v = Volume(array=rng.random((5, 6, 7)).astype(np.float32), spacing=(3.0, 2.0, 2.0), affine=aff)
    a = reslice_axial(v)
    assert a.orientation_codes() == "LPS" and a.shape == (6, 5, 7)
    inv = np.linalg.inv(a.affine)
    for idx in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        j = np.round(inv @ (v.affine @ [*idx, 1.0]))[:3].astype(int)
        assert a.array[tuple(j)] == v.array[idx]
