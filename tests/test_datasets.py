import numpy as np
import pytest

from dicom_factory import phantom_hu, write_series
from medrecon.datasets import chest_ct_slab, resample_volume, select_files
from medrecon.errors import UserError
from medrecon.io import load_volume


@pytest.fixture()
def numbered_series(tmp_path):
    """8 slices named 1-08.dcm (first in z) .. 1-01.dcm (last), like the sample chest CT."""
    hu = phantom_hu((8, 16, 16))
    paths = write_series(tmp_path, hu, spacing=(5.0, 0.8, 0.8))
    for k, p in enumerate(paths):
        p.rename(tmp_path / f"1-{8 - k:02d}.dcm")
    return tmp_path, hu


def test_select_files_by_name_not_index(numbered_series) -> None:
    folder, hu = numbered_series
    vol = load_volume(folder)
    slab = select_files(vol, range(5, 9))  # files 1-05..1-08 are z indices 0..3
    np.testing.assert_allclose(slab.array, hu[:4], atol=0.5)
    assert [p.split("/")[-1] for p in slab.source["files"]] == ["1-08.dcm", "1-07.dcm", "1-06.dcm", "1-05.dcm"]
    slab2 = select_files(vol, range(1, 5))  # z indices 4..7: the affine's origin moves with them
    np.testing.assert_allclose(slab2.affine[:3, 3], (vol.affine @ [4, 0, 0, 1])[:3])
    with pytest.raises(UserError, match="expected 3 files"):
        select_files(vol, range(7, 10))


def test_resample_keeps_field_of_view(numbered_series) -> None:
    folder, _ = numbered_series
    vol = load_volume(folder)
    small = resample_volume(vol, 4)
    assert small.shape == (8, 4, 4) and small.spacing[1] == pytest.approx(3.2)
    # new pixel (0, 0) sits at the centre of the old 4x4 block (old index 1.5, 1.5)
    np.testing.assert_allclose(small.affine @ [0, 0, 0, 1], vol.affine @ [0, 1.5, 1.5, 1], atol=1e-9)
    np.testing.assert_allclose(small.array[:, 0, 0], vol.array[:, :4, :4].mean(axis=(1, 2)), rtol=1e-5)


def test_missing_chest_ct_gives_fetch_hint(tmp_path) -> None:
    with pytest.raises(UserError, match="fetch_sample_data.py"):
        chest_ct_slab("test", root=tmp_path / "nowhere")
    with pytest.raises(UserError, match="train"):
        chest_ct_slab("validation", root=tmp_path)
