#!/usr/bin/env python3
"""Write the demo volumes shipped inside the package (``medrecon/data/``), with their provenance.

- ``lung2_slab.nii.gz``: the central 24 slices of the held-out chest CT ``lung2`` (pyradiomics 3.1.0),
  512 x 512 -> 128 x 128 over the whole field of view (block means), HU rounded to integers;
- ``brain2_slab.nii.gz``: all 23 slices of the held-out brain MR ``brain2`` (pyradiomics 3.1.0),
  256 x 256 -> 128 x 128 (block means), the file's own units.

Both come from subjects that no shipped prior was trained on. ``<name>.json`` records the package,
version, licence, source SHA-256, slices and processing.

    python scripts/make_demo_data.py          # needs the real sample volumes (scripts/fetch_sample_data.py --local ...)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLABS = {"lung2": 24, "brain2": 23}


def main() -> int:
    from medrecon.datasets import REAL_VOLUMES, real_volume, resample_volume, take_slab
    from medrecon.io import save_volume

    out = REPO / "medrecon" / "data"
    out.mkdir(exist_ok=True)
    for name, n in SLABS.items():
        entry, volume = REAL_VOLUMES[name], real_volume(name)
        z0 = (volume.shape[0] - n) // 2
        slab = resample_volume(take_slab(volume, z0, z0 + n), 128)
        array = np.round(slab.array) if entry.units == "HU" else slab.array
        source = {"name": name, "package": entry.package, "licence": entry.licence, "sha256": entry.sha256}
        slab = dataclasses.replace(slab, array=array.astype(np.float32), source=source,
                                   description=f"{name} slices {z0}..{z0 + n - 1}, 128 x 128 (held out)")
        path = save_volume(slab, out / f"{name}_slab.nii.gz", overwrite=True)
        meta = {"file": path.name, "from": entry.description, "package": entry.package, "licence": entry.licence,
                "source_sha256": entry.sha256, "slices": [z0, z0 + n - 1], "of_slices": volume.shape[0],
                "processing": "resliced to axial, in-plane block means to 128 x 128 over the whole field of view"
                              + (", HU rounded to integers" if entry.units == "HU" else ""),
                "modality": entry.modality, "units": entry.units, "spacing_mm": list(slab.spacing),
                "role": "held-out test subject: never trained on, never used to choose a training recipe",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        (out / f"{name}_slab.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
