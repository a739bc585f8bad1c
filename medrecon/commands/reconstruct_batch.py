"""``medrecon reconstruct-batch``: reconstruct a list of studies, each with ``medrecon reconstruct``."""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path

from medrecon.errors import UserError

NAME = "reconstruct-batch"
HELP = ("Reconstruct every study of LIST (a text file of 'INPUT OUTPUT' lines, or a CSV file with "
        "columns input,output; relative paths are relative to LIST's folder) with the options of "
        "`medrecon reconstruct` that follow LIST. Finished studies (OUTPUT and its .config.json "
        "exist) are skipped, so a rerun continues. Under torchrun or srun every process takes every "
        "N-th study (one device each).")

PER_STUDY = ("--input", "--output", "--json", "--dicom-out", "--state-dir", "--resume")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("list", metavar="LIST", help="text (INPUT OUTPUT per line, # comments) or CSV "
                   "(header input,output) list of studies")
    p.add_argument("options", nargs=argparse.REMAINDER, metavar="...",
                   help="options of `medrecon reconstruct` for every study, e.g. --method tv")


def read_study_list(path: str | Path) -> list[tuple[Path, Path]]:
    """``[(input, output), ...]`` from a text or CSV list; relative paths against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"study list {path}: cannot read it ({exc})") from None
    rows: list[tuple[int, list[str]]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
        if "input" not in fields or "output" not in fields:
            raise UserError(f"study list {path}: a CSV list needs the columns input and output, "
                            f"got {reader.fieldnames}")
        for row in reader:
            rows.append((reader.line_num, [(row[fields["input"]] or "").strip(),
                                           (row[fields["output"]] or "").strip()]))
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                rows.append((number, shlex.split(line, comments=True)))
            except ValueError as exc:
                raise UserError(f"study list {path}, line {number}: {exc}") from None
    studies, outputs = [], set()
    for number, fields_ in rows:
        if len(fields_) != 2 or not all(fields_):
            raise UserError(f"study list {path}, line {number}: expected an input and an output, "
                            f"got {fields_}")
        inp, out = ((Path(f) if Path(f).is_absolute() else path.parent / f) for f in fields_)
        if out.resolve() in outputs:
            raise UserError(f"study list {path}, line {number}: output {out} appears twice")
        outputs.add(out.resolve())
        studies.append((inp, out))
    if not studies:
        raise UserError(f"study list {path} names no study")
    return studies


def _stem(output: Path) -> str:
    name = str(output)
    return name[:-len(".nii.gz")] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]


def is_finished(output: Path) -> bool:
    """A study is finished when its volume and its effective config (written after it) exist."""
    return output.is_file() and Path(_stem(output) + ".config.json").is_file()


def run(args: argparse.Namespace) -> int:
    from medrecon.commands import reconstruct
    from medrecon.distributed.launch import launch_from_environment, rank_device
    from medrecon.methods import run_method

    options = list(args.options)
    if options[:1] == ["--"]:
        options = options[1:]
    given = sorted({o.split("=", 1)[0] for o in options} & set(PER_STUDY))
    if given:
        raise UserError(f"{', '.join(given)}: set per study by LIST (input, output; the metrics "
                        "JSON goes beside the output), not for the whole batch")
    parser = argparse.ArgumentParser(prog=f"medrecon {NAME} LIST", add_help=False)
    reconstruct.add_arguments(parser)
    parser.parse_args(["--input", "study.h5", "--output", "study.nii.gz", *options])   # options checked once
    studies = read_study_list(args.list)
    launch = launch_from_environment()
    rank, world = (launch.rank, launch.world) if launch else (0, 1)
    mine = [(i, s) for i, s in enumerate(studies) if i % world == rank]
    if launch is not None:
        device_name = parser.parse_args(["--input", "study.h5", "--output", "study.nii.gz", *options]).device
        rank_device(device_name, launch.local_rank)          # this rank's GPU becomes "cuda"
    done = skipped = 0
    failed: list[str] = []
    who = f"rank {rank}/{world}: " if world > 1 else ""
    for i, (inp, out) in mine:
        label = f"study {i + 1}/{len(studies)} ({inp} -> {out})"
        if is_finished(out):
            skipped += 1
            print(f"{who}{label}: finished already, skipped")
            continue
        study = parser.parse_args(["--input", str(inp), "--output", str(out), *options])
        study.quiet = args.quiet
        if launch is not None and study.device.startswith("cuda"):
            study.device = "cuda"
        try:
            reconstruct.reconstruct(study, run_method)
            done += 1
        except UserError as exc:
            failed.append(label)
            print(f"medrecon {NAME}: {label}: error: {exc}", file=sys.stderr)
    print(f"{who}{done} reconstructed, {skipped} skipped (finished), {len(failed)} failed, of "
          f"{len(mine)} studies{' for this rank' if world > 1 else ''}")
    return 2 if failed else 0
