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
from medrecon.library_messages import captured

OUT_OF_MEMORY = "out of memory (try fewer slices, a smaller --size or a smaller chunk)"
COMMANDS = (
    "demo", "phantom", "simulate", "reconstruct", "reconstruct_batch", "evaluate", "info", "data",
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


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help once: not when the help already states its
    default, and not for flags or options without a default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False or default is True
                or default is argparse.SUPPRESS or not action.option_strings or default == []):
            return text
        return text + " (default: %(default)s)"


def _add_logging_options(parser: argparse.ArgumentParser, default: object) -> None:
    """--quiet and --verbose, accepted before and after the sub-command (the sub-command's copy
    defaults to SUPPRESS, so it never resets a value given before it)."""
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="no progress output; warnings and results only")
    parser.add_argument("--verbose", action="store_true", default=default, help="debug logging")


class _VersionAction(argparse.Action):
    """``--version``: the versions are looked up (git, torch) only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from medrecon.provenance import version_line
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrecon", formatter_class=HelpFormatter,
        description="3D reconstruction for sparse-view CT, limited-angle CT and multi-coil "
                    "CS-MRI with 2D diffusion priors and TV along z.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the medrecon, git, torch and Python versions and exit")
    _add_logging_options(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        module = load_command(module_name)
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP,
                             formatter_class=HelpFormatter)
        module.add_arguments(cmd)
        _add_logging_options(cmd, argparse.SUPPRESS)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from medrecon.provenance import command_line

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = command_line(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    prog = f"medrecon {args.command}"
    try:
        with captured(prog, verbose=args.verbose):
            return int(args._run(args) or 0)
    except Interrupted as exc:
        print(f"{prog}: interrupted: {one_line(exc)}", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{prog}: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # torch reports a failed allocation this way
        if not any(k in str(exc) for k in ("can't allocate memory", "out of memory")):
            raise
        print(f"{prog}: error: {OUT_OF_MEMORY} ({str(exc).splitlines()[0][:200]})", file=sys.stderr)
        return 1
    except OSError as exc:  # the system refused: disk full, permissions changed mid-run, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
