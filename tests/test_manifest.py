"""Data manifests: schema validation, path safety, verification and pinning."""

import os
from pathlib import Path

import pytest
import yaml

from medrecon.errors import DataError
from medrecon.io.manifest import (dump_manifest, load_manifest, parse_manifest, pin_manifest,
                                  sha256_file, shipped_manifests, verify_manifest)

BASE = {
    "schema": "medrecon-manifest/1", "name": "toy", "title": "Toy", "description": "d",
    "modality": "CT", "licence": {"name": "CC0", "terms": "none"},
    "obtain": {"instructions": "make it"}, "checksums": "user-supplied", "preprocessing": [],
}


def _write(tmp_path, **fields):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({**BASE, **fields}))
    return path


def test_every_shipped_manifest_validates():
    paths = shipped_manifests()
    names = {p.stem for p in paths}
    assert {"aapm-ldct-grand-challenge", "brats", "fastmri-knee-multicoil",
            "fastmri-brain-multicoil", "local-study"} <= names
    for p in paths:
        m = load_manifest(p)
        assert m.name == p.stem and m.licence["terms"] and m.obtain["instructions"]
        assert m.preprocessing or p.stem == "local-study"


@pytest.mark.parametrize("bad", ["../secret", "a/../../b", "/etc/passwd", "C:/data/x",
                                 "a\\b", "~/x"])
def test_paths_escaping_root_rejected(tmp_path, bad):
    with pytest.raises(DataError, match="absolute|'..'|backslash") as exc:
        load_manifest(_write(tmp_path, files=[{"path": bad, "sha256": None}]))
    assert "m.yaml" in str(exc.value)
    with pytest.raises(DataError):
        load_manifest(_write(tmp_path, groups=[{"pattern": bad}]))


def test_schema_errors_named(tmp_path):
    with pytest.raises(DataError, match=r"m\.yaml: missing required field 'title'"):
        parse_manifest({k: v for k, v in BASE.items() if k != "title"} | {"files": []},
                       source=f"manifest {tmp_path / 'm.yaml'}")
    with pytest.raises(DataError, match="unknown field"):
        load_manifest(_write(tmp_path, files=[{"path": "a", "sha256": None}], typo=1))
    with pytest.raises(DataError, match="not 64 hex digits"):
        load_manifest(_write(tmp_path, files=[{"path": "a", "sha256": "abc"}]))
    with pytest.raises(DataError, match="'sha256' is required"):
        load_manifest(_write(tmp_path, files=[{"path": "a"}]))
    with pytest.raises(DataError, match="nothing to verify"):
        load_manifest(_write(tmp_path))
    with pytest.raises(DataError, match="'pinned' but a"):
        load_manifest(_write(tmp_path, checksums="pinned", files=[{"path": "a", "sha256": None}]))
    with pytest.raises(DataError, match="listed twice"):
        load_manifest(_write(tmp_path, files=[{"path": "a", "sha256": None},
                                              {"path": "./a", "sha256": None}]))
    (tmp_path / "bad.yaml").write_text("a: [unclosed")
    with pytest.raises(DataError, match="bad.yaml is not valid YAML"):
        load_manifest(tmp_path / "bad.yaml")


def test_verify_reports_ok_missing_bad_unchecked_and_groups(tmp_path):
    root = tmp_path / "root"
    (root / "scans").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"alpha")
    (root / "b.bin").write_bytes(b"beta")
    (root / "c.bin").write_bytes(b"gamma")
    for i in range(3):
        (root / "scans" / f"s{i}.h5").write_bytes(b"x")
    good = sha256_file(root / "a.bin")
    path = _write(tmp_path, files=[
        {"path": "a.bin", "sha256": good, "size": 5},
        {"path": "b.bin", "sha256": "0" * 64},
        {"path": "c.bin", "sha256": None},
        {"path": "d.bin", "sha256": None},
        {"path": "e.bin", "sha256": None, "required": False}],
        groups=[{"pattern": "scans/*.h5", "min_count": 2, "expected_count": 10},
                {"pattern": "other/**/*.dcm", "min_count": 1}])
    r = verify_manifest(path, root)
    assert r.ok == ["a.bin"] and r.bad_checksum == ["b.bin"] and r.unchecked == ["c.bin"]
    assert r.missing == ["d.bin"] and r.optional_missing == ["e.bin"]
    assert r.groups == [("scans/*.h5", 3, 2, 10), ("other/**/*.dcm", 0, 1, None)]
    assert r.short_groups == ["other/**/*.dcm"] and not r.passed
    text = "\n".join(r.lines())
    assert "MISSING: d.bin" in text and "BAD CHECKSUM: b.bin" in text and "FAILED" in text


def test_verify_passes_and_detects_truncation_by_size(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.bin").write_bytes(b"alpha")
    path = _write(tmp_path, checksums="pinned",
                  files=[{"path": "a.bin", "sha256": sha256_file(root / "a.bin"), "size": 5}])
    assert verify_manifest(path, root).passed
    (root / "a.bin").write_bytes(b"alp")
    r = verify_manifest(path, root)
    assert r.bad_size == ["a.bin"] and not r.passed


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_escaping_root_reported(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    root = tmp_path / "r"
    root.mkdir()
    (root / "link.bin").symlink_to(outside)
    path = _write(tmp_path, files=[{"path": "link.bin", "sha256": None}])
    r = verify_manifest(path, root)
    assert r.escaping == ["link.bin"] and not r.passed


def test_pin_then_verify_detects_later_corruption(tmp_path):
    root = tmp_path / "r"
    (root / "dicom").mkdir(parents=True)
    for i in range(2):
        (root / "dicom" / f"{i}.dcm").write_bytes(bytes([i]) * 10)
    m = load_manifest(_write(tmp_path, groups=[{"pattern": "dicom/*.dcm"}]))
    pinned = pin_manifest(m, root)
    assert pinned.checksums == "pinned" and [f.path for f in pinned.files] == \
        ["dicom/0.dcm", "dicom/1.dcm"]
    out = tmp_path / "pinned.yaml"
    out.write_text(dump_manifest(pinned))
    assert verify_manifest(out, root).passed
    (root / "dicom" / "1.dcm").write_bytes(bytes([9]) * 10)
    assert verify_manifest(out, root).bad_checksum == ["dicom/1.dcm"]


def test_verify_never_writes(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "a").write_bytes(b"a")
    manifest = _write(tmp_path, files=[{"path": "a", "sha256": None}])
    before = sorted((p, p.stat().st_mtime_ns) for p in Path(tmp_path).rglob("*"))
    verify_manifest(manifest, root)
    assert sorted((p, p.stat().st_mtime_ns) for p in Path(tmp_path).rglob("*")) == before


def test_data_cli_verify_exit_codes_and_pin(tmp_path, capsys):
    from medrecon.cli import main
    root = tmp_path / "study"
    (root / "dicom" / "s1").mkdir(parents=True)
    assert main(["data", "verify", "local-study", "--root", str(root)]) == 1
    assert "SHORT: dicom/**/*" in capsys.readouterr().out
    (root / "dicom" / "s1" / "a.dcm").write_bytes(b"x" * 10)
    assert main(["data", "verify", "local-study", "--root", str(root)]) == 0
    assert "PASSED" in capsys.readouterr().out
    out = tmp_path / "pinned.yaml"
    assert main(["data", "pin", "local-study", "--root", str(root), "--out", str(out)]) == 0
    assert main(["data", "verify", str(out), "--root", str(root)]) == 0
    assert "1 verified" in capsys.readouterr().out
    (root / "dicom" / "s1" / "a.dcm").write_bytes(b"y" * 10)
    assert main(["data", "verify", str(out), "--root", str(root)]) == 1
    assert "BAD CHECKSUM: dicom/s1/a.dcm" in capsys.readouterr().out
    assert main(["data", "pin", "local-study", "--root", str(root), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "verify", "no-such-manifest", "--root", str(root)]) == 2
    assert "shipped manifests: aapm-ldct-grand-challenge" in capsys.readouterr().err


def test_data_cli_list_and_show(capsys):
    from medrecon.cli import main
    assert main(["data", "list"]) == 0
    assert "fastmri-knee-multicoil" in capsys.readouterr().out
    assert main(["data", "show", "fastmri-knee-multicoil"]) == 0
    out = capsys.readouterr().out
    assert "fastMRI Dataset Sharing Agreement" in out and "multicoil_train/*.h5" in out
