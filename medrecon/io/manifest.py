"""Data manifests: what a dataset is, where a user gets it, which files it has, and how medrecon
preprocesses it. The schema ("medrecon-manifest/1") is documented in ``data_manifests/README.md``.

Two kinds of expected content:

- ``files``: exact relative paths, each with a SHA-256 (or ``null`` when the checksum can only
  come from the user's own copy: verification then reports the file as *unchecked*, never as ok
  by assumption), and an optional size in bytes.
- ``groups``: glob patterns (``multicoil_train/*.h5``) with a minimum count, for datasets of
  thousands of files whose names the manifest does not list one by one.

No path or pattern may escape the dataset root: absolute paths, drive letters, backslashes and
``..`` components are rejected when the manifest is loaded, and files reached through symbolic
links that resolve outside the root are reported as escaping when it is verified.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import yaml

from medrecon.errors import DataError, UserError

SCHEMA = "medrecon-manifest/1"
CHECKSUM_MODES = ("pinned", "user-supplied")
MODALITIES = ("CT", "MR", "CT+MR", "OT")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    """One expected file: ``path`` relative to the root (POSIX), ``sha256`` lower-case hex or None."""
    path: str
    sha256: Optional[str] = None
    size: Optional[int] = None
    description: str = ""
    required: bool = True


@dataclass(frozen=True)
class GroupEntry:
    """A set of files matched by a glob ``pattern`` relative to the root (``**`` spans folders)."""
    pattern: str
    min_count: int = 1
    expected_count: Optional[int] = None
    description: str = ""
    required: bool = True


@dataclass
class Manifest:
    """A parsed, validated manifest (see ``data_manifests/README.md`` for each field)."""
    name: str
    title: str
    description: str
    modality: str
    licence: dict[str, Any]
    obtain: dict[str, Any]
    checksums: str
    preprocessing: list[dict[str, Any]]
    files: list[FileEntry] = field(default_factory=list)
    groups: list[GroupEntry] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    used_by: str = ""
    citation: list[str] = field(default_factory=list)
    layout: str = ""
    path: Optional[Path] = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a YAML-ready mapping (schema order)."""
        out: dict[str, Any] = {"schema": SCHEMA, "name": self.name, "title": self.title,
                               "description": self.description, "modality": self.modality}
        if self.tasks:
            out["tasks"] = list(self.tasks)
        if self.used_by:
            out["used_by"] = self.used_by
        out["licence"] = dict(self.licence)
        out["obtain"] = dict(self.obtain)
        if self.citation:
            out["citation"] = list(self.citation)
        if self.layout:
            out["layout"] = self.layout
        out["checksums"] = self.checksums
        if self.files:
            out["files"] = [_drop_defaults({"path": f.path, "sha256": f.sha256, "size": f.size,
                                            "description": f.description,
                                            "required": f.required}, keep=("sha256",))
                            for f in self.files]
        if self.groups:
            out["groups"] = [_drop_defaults({"pattern": g.pattern, "min_count": g.min_count,
                                             "expected_count": g.expected_count,
                                             "description": g.description,
                                             "required": g.required}, keep=("min_count",))
                             for g in self.groups]
        out["preprocessing"] = [dict(p) for p in self.preprocessing]
        return out


def _drop_defaults(d: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items()
            if k in keep or not (v is None or v == "" or v is True)}


def check_relative(path: str, where: str) -> str:
    """Validate a manifest path or pattern: relative, POSIX, no ``..``; return it normalised."""
    if not isinstance(path, str) or not path.strip():
        raise DataError(f"{where}: path must be a non-empty string, got {path!r}")
    if "\\" in path:
        raise DataError(f"{where}: path {path!r} contains a backslash; use '/' separators")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or path.startswith("~"):
        raise DataError(f"{where}: path {path!r} is absolute; manifest paths are relative "
                        f"to the dataset root")
    parts = PurePosixPath(path).parts
    if any(p == ".." for p in parts):
        raise DataError(f"{where}: path {path!r} contains '..' and could escape the dataset root")
    return str(PurePosixPath(*[p for p in parts if p != "."]))


def _req(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise DataError(f"{where}: missing required field '{key}'")
    val = d[key]
    if not isinstance(val, typ):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise DataError(f"{where}: field '{key}' must be {names}, got {type(val).__name__}")
    return val


def _opt_int(d: dict[str, Any], key: str, where: str, minimum: int = 0) -> Optional[int]:
    val = d.get(key)
    if val is None:
        return None
    if isinstance(val, bool) or not isinstance(val, int) or val < minimum:
        raise DataError(f"{where}: '{key}' must be an integer >= {minimum}, got {val!r}")
    return val


_TOP_KEYS = {"schema", "name", "title", "description", "modality", "tasks", "used_by", "licence",
             "obtain", "citation", "layout", "checksums", "files", "groups", "preprocessing"}


def parse_manifest(data: Any, source: str = "<manifest>") -> Manifest:
    """Validate a manifest mapping (as loaded from YAML) and return a :class:`Manifest`."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: a manifest must be a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise DataError(f"{source}: unknown field(s) {', '.join(unknown)}")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise DataError(f"{source}: 'schema' must be {SCHEMA!r}, got {schema!r}")
    name = _req(data, "name", str, source)
    if not _NAME_RE.match(name):
        raise DataError(f"{source}: name {name!r} must be lower-case letters, digits and '-'")
    title = _req(data, "title", str, source)
    description = _req(data, "description", str, source)
    modality = _req(data, "modality", str, source)
    if modality not in MODALITIES:
        raise DataError(f"{source}: modality {modality!r} is not one of {', '.join(MODALITIES)}")
    licence = _req(data, "licence", dict, source)
    for key in ("name", "terms"):
        _req(licence, key, str, f"{source}: licence")
    obtain = _req(data, "obtain", dict, source)
    _req(obtain, "instructions", str, f"{source}: obtain")
    checksums = _req(data, "checksums", str, source)
    if checksums not in CHECKSUM_MODES:
        raise DataError(f"{source}: checksums must be one of {', '.join(CHECKSUM_MODES)}, "
                        f"got {checksums!r}")
    files = [_parse_file(f, f"{source}: files[{i}]") for i, f in enumerate(data.get("files") or [])]
    groups = [_parse_group(g, f"{source}: groups[{i}]")
              for i, g in enumerate(data.get("groups") or [])]
    if not files and not groups:
        raise DataError(f"{source}: lists no 'files' and no 'groups'; nothing to verify")
    seen: set[str] = set()
    for f in files:
        if f.path in seen:
            raise DataError(f"{source}: file {f.path!r} is listed twice")
        seen.add(f.path)
    if checksums == "pinned":
        unpinned = [f.path for f in files if f.sha256 is None]
        if unpinned or not files:
            what = ", ".join(unpinned[:3]) if unpinned else "no file"
            raise DataError(f"{source}: checksums is 'pinned' but {what} has a sha256; "
                            f"use 'user-supplied' or pin every file")
    prep = _req(data, "preprocessing", list, source)
    for i, step in enumerate(prep):
        where = f"{source}: preprocessing[{i}]"
        if not isinstance(step, dict):
            raise DataError(f"{where}: each step must be a mapping with 'op' and 'description'")
        _req(step, "op", str, where)
        _req(step, "description", str, where)
    citation = data.get("citation") or []
    if isinstance(citation, str):
        citation = [citation]
    return Manifest(
        name=name, title=title, description=description, modality=modality,
        licence=licence, obtain=obtain, checksums=checksums, preprocessing=prep,
        files=files, groups=groups, tasks=list(data.get("tasks") or []),
        used_by=str(data.get("used_by") or ""), citation=[str(c) for c in citation],
        layout=str(data.get("layout") or ""))


def _parse_file(d: Any, where: str) -> FileEntry:
    if not isinstance(d, dict):
        raise DataError(f"{where}: must be a mapping with 'path' and 'sha256'")
    unknown = sorted(set(d) - {"path", "sha256", "size", "description", "required"})
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}")
    path = check_relative(d.get("path"), where)
    if any(c in path for c in "*?["):
        raise DataError(f"{where}: file path {path!r} contains a wildcard; use 'groups'")
    if "sha256" not in d:
        raise DataError(f"{where} ({path}): 'sha256' is required (null when the checksum comes "
                        f"from the user's copy)")
    sha = d["sha256"]
    if sha is not None:
        sha = str(sha).lower()
        if not _SHA_RE.match(sha):
            raise DataError(f"{where} ({path}): sha256 {d['sha256']!r} is not 64 hex digits")
    return FileEntry(path=path, sha256=sha, size=_opt_int(d, "size", where),
                     description=str(d.get("description") or ""),
                     required=bool(d.get("required", True)))


def _parse_group(d: Any, where: str) -> GroupEntry:
    if not isinstance(d, dict):
        raise DataError(f"{where}: must be a mapping with 'pattern'")
    unknown = sorted(set(d) - {"pattern", "min_count", "expected_count", "description",
                               "required"})
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}")
    pattern = check_relative(d.get("pattern"), where)
    min_count = _opt_int(d, "min_count", where, minimum=1)
    return GroupEntry(pattern=pattern, min_count=1 if min_count is None else min_count,
                      expected_count=_opt_int(d, "expected_count", where, minimum=1),
                      description=str(d.get("description") or ""),
                      required=bool(d.get("required", True)))


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a manifest YAML file; :class:`DataError` names the file and problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {path} is not valid YAML: {exc}") from exc
    manifest = parse_manifest(data, source=f"manifest {path}")
    manifest.path = path
    return manifest


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes as lower-case hex, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_manifest`. Paths are manifest-relative strings.

    ``ok``: present with a matching checksum; ``unchecked``: present, no checksum to compare;
    ``missing``: required and absent; ``optional_missing``: absent but not required;
    ``bad_checksum`` / ``bad_size``: present but different; ``escaping``: reached through a
    link that leaves the root; ``groups``: ``(pattern, found, min_count, expected_count)``;
    ``short_groups``: required groups with fewer than ``min_count`` files;
    ``optional_groups``: patterns of groups that are not required (reported only).
    """
    manifest: str
    root: Path
    ok: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    optional_missing: list[str] = field(default_factory=list)
    bad_checksum: list[str] = field(default_factory=list)
    bad_size: list[str] = field(default_factory=list)
    escaping: list[str] = field(default_factory=list)
    groups: list[tuple[str, int, int, Optional[int]]] = field(default_factory=list)
    short_groups: list[str] = field(default_factory=list)
    optional_groups: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing required is missing, short, corrupt or escaping the root."""
        return not (self.missing or self.bad_checksum or self.bad_size or self.escaping
                    or self.short_groups)

    def lines(self) -> list[str]:
        """A human-readable report, one finding per line."""
        out = [f"manifest {self.manifest}, root {self.root}"]
        for label, items in (("MISSING", self.missing), ("BAD CHECKSUM", self.bad_checksum),
                             ("BAD SIZE", self.bad_size), ("ESCAPES ROOT", self.escaping),
                             ("missing (optional)", self.optional_missing),
                             ("unchecked (no sha256 in manifest)", self.unchecked)):
            out += [f"  {label}: {p}" for p in items]
        for pattern, found, min_count, expected in self.groups:
            exp = f", dataset has {expected}" if expected is not None else ""
            if pattern in self.optional_groups:
                out.append(f"  optional group: {pattern}: {found} file(s) found{exp}")
                continue
            flag = "SHORT" if pattern in self.short_groups else "group"
            out.append(f"  {flag}: {pattern}: {found} file(s) found (need >= {min_count}{exp})")
        out.append(f"{'PASSED' if self.passed else 'FAILED'}: {len(self.ok)} verified, "
                   f"{len(self.unchecked)} unchecked, {len(self.missing)} missing, "
                   f"{len(self.bad_checksum)} bad checksum, {len(self.bad_size)} bad size, "
                   f"{len(self.short_groups)} short group(s), {len(self.escaping)} escaping")
        return out


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def glob_group(root: Path, pattern: str) -> list[Path]:
    """Regular files under ``root`` matching ``pattern`` (``**`` matches any folder depth)."""
    return sorted(p for p in root.glob(pattern) if p.is_file())


def verify_manifest(manifest: str | os.PathLike | Manifest, root: str | os.PathLike,
                    check_checksums: bool = True) -> VerifyReport:
    """Check that a dataset copy under ``root`` has the manifest's files and checksums.

    Never modifies anything. ``check_checksums=False`` checks presence and size only.
    """
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset root {root} is not a directory")
    root_res = root.resolve()
    report = VerifyReport(manifest=str(m.path or m.name), root=root)
    for f in m.files:
        p = root / f.path
        if not p.is_file():
            (report.missing if f.required else report.optional_missing).append(f.path)
            continue
        if not _inside(p, root_res):
            report.escaping.append(f.path)
            continue
        if f.size is not None and p.stat().st_size != f.size:
            report.bad_size.append(f.path)
            continue
        if f.sha256 is None or not check_checksums:
            report.unchecked.append(f.path)
        elif sha256_file(p) == f.sha256:
            report.ok.append(f.path)
        else:
            report.bad_checksum.append(f.path)
    for g in m.groups:
        found = glob_group(root, g.pattern)
        inside = [p for p in found if _inside(p, root_res)]
        report.escaping += [p.relative_to(root).as_posix() for p in found if p not in inside]
        report.groups.append((g.pattern, len(inside), g.min_count, g.expected_count))
        if not g.required:
            report.optional_groups.append(g.pattern)
        if len(inside) < g.min_count and g.required:
            report.short_groups.append(g.pattern)
    return report


def pin_manifest(manifest: str | os.PathLike | Manifest, root: str | os.PathLike
                 ) -> Manifest:
    """A copy of ``manifest`` whose files (and every file matched by its groups) carry the
    SHA-256 and size of the user's copy under ``root``: later verification then detects
    corruption of that copy. Files that are absent are kept unpinned; groups are kept for
    their count checks. Checksums become 'pinned' only if every file could be pinned."""
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset root {root} is not a directory")
    root_res = root.resolve()
    files: list[FileEntry] = []
    listed = {f.path for f in m.files}
    missing: list[str] = []
    escaping: list[str] = []
    for f in m.files:
        p = root / f.path
        if p.is_file() and _inside(p, root_res):
            files.append(FileEntry(f.path, sha256_file(p), p.stat().st_size, f.description,
                                   f.required))
            continue
        if p.exists() or p.is_symlink():
            escaping.append(f.path)
        elif f.required:
            missing.append(f.path)
        files.append(f)
    for g in m.groups:
        for p in glob_group(root, g.pattern):
            rel = p.relative_to(root).as_posix()
            if not _inside(p, root_res):
                escaping.append(rel)
            elif rel not in listed:
                listed.add(rel)
                files.append(FileEntry(rel, sha256_file(p), p.stat().st_size,
                                       f"matched {g.pattern}", g.required))
    if missing or escaping:
        parts = []
        if missing:
            parts.append(f"{len(missing)} required file(s) missing ({', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''})")
        if escaping:
            parts.append(f"{len(escaping)} file(s) lead out of the root through links "
                         f"({', '.join(escaping[:5])}{' ...' if len(escaping) > 5 else ''})")
        raise DataError(f"cannot pin {m.name} against {root}: " + "; ".join(parts)
                        + f"; run `medrecon data verify` for the full report")
    all_pinned = bool(files) and all(f.sha256 for f in files)
    return Manifest(
        name=m.name, title=m.title, description=m.description, modality=m.modality,
        licence=m.licence, obtain=m.obtain,
        checksums="pinned" if all_pinned else "user-supplied",
        preprocessing=m.preprocessing, files=files,
        groups=list(m.groups), tasks=m.tasks, used_by=m.used_by,
        citation=m.citation, layout=m.layout)


def dump_manifest(m: Manifest) -> str:
    """The manifest as YAML text (block style, keys in schema order)."""
    return yaml.safe_dump(m.to_dict(), sort_keys=False, allow_unicode=True, width=100)


def find_manifest(name_or_path: str) -> Path:
    """Resolve a manifest argument: an existing file, or the name of one in ``data_manifests/``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = Path(__file__).resolve().parents[2] / "data_manifests"
    for cand in (shipped / name_or_path, shipped / f"{name_or_path}.yaml"):
        if cand.is_file():
            return cand
    names = sorted(q.stem for q in shipped.glob("*.yaml")) if shipped.is_dir() else []
    hint = f"; shipped manifests: {', '.join(names)}" if names else ""
    raise UserError(f"manifest {name_or_path} does not exist{hint}")


def shipped_manifests() -> list[Path]:
    """The manifests in the repository's ``data_manifests/`` folder (empty when not present)."""
    shipped = Path(__file__).resolve().parents[2] / "data_manifests"
    return sorted(shipped.glob("*.yaml")) if shipped.is_dir() else []


__all__ = ["SCHEMA", "FileEntry", "GroupEntry", "Manifest", "VerifyReport", "check_relative",
           "parse_manifest", "load_manifest", "verify_manifest", "pin_manifest", "dump_manifest",
           "sha256_file", "find_manifest", "shipped_manifests", "glob_group"]
