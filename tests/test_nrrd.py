"""NRRD input (pynrrd): geometry in LPS whatever the file's space, through load_volume; and
reslicing coronal stacks to axial without moving any voxel."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from medrecon.errors import DataError
from medrecon.io import load_volume
from medrecon.io.nrrd import load_nrrd
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


def _lps_signs(space: str) -> np.ndarray:
    """Signs taking the file's coordinates to LPS, read off the space's name: L, P, S stay;
    R, A flip (the second implementation of the reader's table)."""
    letters = "".join(w[0].upper() for w in space.split("-")) if "-" in space else space
    return np.array([1.0 if letters[0] == "L" else -1.0, 1.0 if letters[1] == "P" else -1.0,
                     1.0 if letters[2] == "S" else -1.0])


@pytest.mark.parametrize("space", ["left-anterior-superior", "LAS", "RAS", "LPS",
                                   "right-anterior-superior", "left-posterior-superior"])
def test_every_supported_space_maps_voxels_to_lps(tmp_path, space: str) -> None:
    data = np.arange(4 * 3 * 5, dtype=np.int16).reshape(4, 3, 5)          # [i, j, k]
    dirs = np.array([[0.6, 0.2, 0.0], [-0.1, 0.9, 0.3], [0.0, 0.4, 2.5]])
    origin = np.array([12.0, -34.0, 56.0])
    _write(tmp_path / "v.nrrd", space, data, dirs, origin)
    v = load_volume(tmp_path / "v.nrrd")
    signs = _lps_signs(space)
    for i, j, k in [(0, 0, 0), (3, 2, 4), (1, 0, 2), (0, 2, 1)]:
        assert v.array[k, j, i] == data[i, j, k]
        lps = signs * (origin + i * dirs[0] + j * dirs[1] + k * dirs[2])
        np.testing.assert_allclose((v.affine @ [k, j, i, 1.0])[:3], lps, atol=1e-12)
    np.testing.assert_allclose(v.spacing, np.linalg.norm(dirs[::-1], axis=1), atol=1e-12)
    assert v.array.dtype == np.float32 and (v.modality, v.units) == ("OT", "a.u.")


def test_missing_origin_is_zero_and_modality_units_come_from_the_caller(tmp_path) -> None:
    data = np.ones((2, 3, 4), np.float32)
    nrrd.write(str(tmp_path / "v.nrrd"), data, {"space": "LAS", "space directions": np.diag([1.0, 2.0, 3.0])})
    v = load_nrrd(tmp_path / "v.nrrd", modality="CT", units="HU")
    # columns: the LAS -> LPS steps of axes k, j, i; origin 0
    np.testing.assert_array_equal(v.affine, [[0, 0, 1.0, 0], [0, -2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1.0]])
    assert (v.modality, v.units) == ("CT", "HU")


@pytest.mark.parametrize("header, words", [
    ({"space": "scanner-xyz"}, "space 'scanner-xyz' is not supported"),
    ({"space": "right-anterior-superior-time"}, "is not supported"),
    ({"space": "LPS", "space directions": np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]])}, "singular"),
    ({"space": "LPS", "space origin": np.array([0.0, np.nan, 0.0])}, "'space origin' must be a finite"),
    ({"space": "LPS", "space directions": np.array([[1.0, 0, 0], [0, np.inf, 0], [0, 0, 1.0]])},
     "three finite 3-vectors"),
])
def test_unsupported_or_broken_geometry_is_refused(tmp_path, header: dict, words: str) -> None:
    from medrecon.io.nrrd import nrrd_affine

    full = {"space directions": np.eye(3), "space origin": np.zeros(3), **header}
    with pytest.raises(DataError, match=words):
        nrrd_affine(full, tmp_path / "x.nrrd")
    with pytest.raises(DataError, match="no 'space directions'"):
        nrrd_affine({"space": "LPS"}, tmp_path / "x.nrrd")


def test_only_3d_numeric_volumes_load(tmp_path) -> None:
    nrrd.write(str(tmp_path / "4d.nrrd"), np.zeros((2, 2, 2, 2), np.float32))
    with pytest.raises(DataError, match="expected a 3D scalar NRRD volume, got 4 dimensions"):
        load_volume(tmp_path / "4d.nrrd")
    data = np.ones((2, 2, 2), np.float32)
    data[1, 0, 1] = np.nan
    _write(tmp_path / "nan.nrrd", "LPS", data, np.eye(3), np.zeros(3))
    with pytest.raises(DataError, match="nan.nrrd"):
        load_volume(tmp_path / "nan.nrrd")


def test_a_2d_nrrd_is_refused(tmp_path) -> None:
    nrrd.write(str(tmp_path / "2d.nrrd"), np.zeros((3, 4), np.float32),
               {"space": "LPS", "space directions": np.eye(2, 3), "space origin": np.zeros(3)})
    with pytest.raises(DataError, match="expected a 3D scalar NRRD volume, got 2 dimensions"):
        load_volume(tmp_path / "2d.nrrd")
