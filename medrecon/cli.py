"""The ``medrecon`` command: one sub-command per module in :mod:`medrecon.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Errors a user can fix (bad files, bad options) are raised as :class:`medrecon.errors.UserError`
and printed as one clear line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from medrecon.errors import UserError

COMMANDS = (
    "demo", "phantom", "simulate", "reconstruct", "reconstruct_batch", "evaluate", "info", "data",
    "train", "prior_eval", "prior",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrecon",
        description="3D reconstruction for sparse-view CT, limited-angle CT and multi-coil "
                    "CS-MRI with 2D diffusion priors and TV along z.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; warnings only")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        try:
            module = importlib.import_module(f"medrecon.commands.{module_name}")
        except ModuleNotFoundError as exc:  # a command whose module has not landed yet
            if exc.name == f"medrecon.commands.{module_name}":
                continue
            raise
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
    except UserError as exc:
        print(f"medrecon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medrecon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
