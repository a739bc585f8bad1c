"""The ``medrecon`` command: one sub-command per module in :mod:`medrecon.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
a module listed in :data:`COMMANDS` that is missing or incomplete is an error (a broken
installation), never a silently shorter command list.
Errors a user can fix (bad files, bad options) are raised as :class:`medrecon.errors.UserError`
and printed as one clear line, never as a traceback: exit status 2. An interrupt exits 130,
also when a sampler saved its state first (:class:`medrecon.errors.Interrupted`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from medrecon.errors import Interrupted, UserError

COMMANDS = (
    "demo", "phantom", "simulate", "reconstruct", "evaluate", "info", "data",
    "train", "prior_eval", "prior",
)
COMMAND_API = ("NAME", "HELP", "add_arguments", "run")


def load_command(module_name: str):
    """The module ``medrecon.commands.<module_name>``, checked for the command API."""
    try:
        module = importlib.import_module(f"medrecon.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"medrecon.commands.{module_name}":
            raise
        raise ImportError(f"medrecon: the command module medrecon.commands.{module_name} is "
                          "missing; the installation is incomplete (reinstall medrecon)") from None
    missing = [a for a in COMMAND_API if not hasattr(module, a)]
    if missing:
        raise ImportError(f"medrecon: the command module medrecon.commands.{module_name} lacks "
                          f"{', '.join(missing)}")
    return module


def one_line(message: object) -> str:
    """A message on one line: a library's multi-line text (e.g. a YAML error with its source
    excerpt and caret) joined with spaces; caret-only lines dropped."""
    parts = [p.strip() for p in str(message).splitlines()]
    return " ".join(p for p in parts if p and set(p) != {"^"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrecon",
        description="3D reconstruction for sparse-view CT, limited-angle CT and multi-coil "
                    "CS-MRI with 2D diffusion priors and TV along z.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; warnings only")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        module = load_command(module_name)
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except Interrupted as exc:
        print(f"medrecon {args.command}: interrupted: {one_line(exc)}", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"medrecon {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medrecon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
