"""``medrecon data``: dataset manifests (list, show, verify a local copy, pin its checksums)."""

from __future__ import annotations

import argparse
import textwrap

NAME = "data"
HELP = ("Dataset manifests: list the shipped ones, show how to obtain a dataset, verify a local "
        "copy (presence, sizes, SHA-256) and pin the checksums of your copy.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="list the manifests shipped in data_manifests/")
    show = sub.add_parser("show", help="print a manifest: licence, how to obtain, layout, "
                                       "files, preprocessing")
    show.add_argument("manifest", metavar="MANIFEST",
                      help="manifest YAML file or the name of a shipped manifest")
    verify = sub.add_parser("verify", help="check a local copy against a manifest; exit code "
                                           "1 when something is missing, corrupt or escapes "
                                           "the root")
    verify.add_argument("manifest", metavar="MANIFEST",
                        help="manifest YAML file or the name of a shipped manifest")
    verify.add_argument("--root", required=True, metavar="DIR",
                        help="folder holding your copy of the dataset")
    verify.add_argument("--no-checksums", action="store_true",
                        help="check presence, counts and sizes only (skip SHA-256; faster)")
    pin = sub.add_parser("pin", help="write a copy of a manifest with the SHA-256 and size of "
                                     "every file of your copy (to detect later corruption)")
    pin.add_argument("manifest", metavar="MANIFEST",
                     help="manifest YAML file or the name of a shipped manifest")
    pin.add_argument("--root", required=True, metavar="DIR",
                     help="folder holding your copy of the dataset")
    pin.add_argument("--out", required=True, metavar="OUT.yaml",
                     help="where to write the pinned manifest")
    pin.add_argument("--overwrite", action="store_true", help="replace an existing OUT.yaml")


def _wrap(text: str, indent: str = "  ") -> str:
    return textwrap.fill(" ".join(str(text).split()), width=96, initial_indent=indent,
                         subsequent_indent=indent)


def _show(m) -> None:
    print(f"{m.name}: {m.title} ({m.modality})")
    print(_wrap(m.description))
    if m.used_by:
        print("used by:")
        print(_wrap(m.used_by))
    print(f"licence: {m.licence.get('name')}" + (f" <{m.licence['url']}>"
                                                  if m.licence.get("url") else ""))
    print(_wrap(m.licence.get("terms", "")))
    print("obtain:" + (f" <{m.obtain['url']}>" if m.obtain.get("url") else ""))
    print(_wrap(m.obtain.get("instructions", "")))
    if m.layout:
        print("layout:")
        print(textwrap.indent(m.layout.rstrip(), "  "))
    print(f"checksums: {m.checksums}")
    for f in m.files:
        print(f"  file {f.path}  sha256 {f.sha256 or 'unknown (user-supplied)'}"
              + ("" if f.required else "  (optional)"))
    for g in m.groups:
        exp = f", dataset has {g.expected_count}" if g.expected_count else ""
        print(f"  group {g.pattern}  >= {g.min_count} file(s){exp}"
              + ("" if g.required else "  (optional)"))
    if m.preprocessing:
        print("preprocessing:")
        for step in m.preprocessing:
            print(f"  - {step['op']}:")
            print(_wrap(step["description"], "      "))
    for c in m.citation:
        print(f"cite: {c}")


def run(args: argparse.Namespace) -> int:
    from medrecon.io.atomic import write_text_atomic
    from medrecon.io.manifest import (dump_manifest, find_manifest, load_manifest,
                                      pin_manifest, shipped_manifests, verify_manifest)

    if args.data_command == "list":
        for path in shipped_manifests():
            m = load_manifest(path)
            print(f"{m.name:28s} {m.modality:5s} {m.title}")
        return 0
    m = load_manifest(find_manifest(args.manifest))
    if args.data_command == "show":
        _show(m)
        return 0
    if args.data_command == "verify":
        report = verify_manifest(m, args.root, check_checksums=not args.no_checksums)
        print("\n".join(report.lines()))
        return 0 if report.passed else 1
    if args.data_command == "pin":
        from medrecon.io.outputs import OutputPlan

        plan = OutputPlan(overwrite=args.overwrite)
        plan.add_input(m.path, "manifest")
        plan.add_input(args.root, "--root")
        out = plan.add_file(args.out, "--out")
        plan.check()
        with plan.open() as staged:
            pinned = pin_manifest(m, args.root)
            header = (f"# pinned from {m.path} against {args.root}: checksums of that copy\n")
            write_text_atomic(staged.path(out), header + dump_manifest(pinned),
                              what="pinned manifest")
        n = sum(1 for f in pinned.files if f.sha256)
        print(f"wrote {args.out}: {n} file(s) pinned, checksums: {pinned.checksums}")
        return 0
    raise AssertionError(args.data_command)
