"""``medrecon prior``: list the priors, show a model card, import a published checkpoint.

    medrecon prior list [PRIOR_DIR ...]          # shipped priors (and these folders), one per line
    medrecon prior show chest-ct                 # the model card
    medrecon prior import --format ncsnpp checkpoint_185.pth --output priors/diffusionmbir
    medrecon prior import --format adm AAPM256_1M.pt --output priors/dds

An imported prior is used like any other: ``--prior priors/diffusionmbir``.
"""

from __future__ import annotations

import argparse
import logging

NAME = "prior"
HELP = "diffusion priors: list them, show a model card, import a published DiffusionMBIR/DDS checkpoint"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="prior_action", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="the shipped priors (and the prior folders given), one per line: name, "
                                      "modality, intensity units, pixel spacing range (mm), image size, "
                                      "parameters, training data",
                         description="One line per prior: the shipped ones, then every PRIOR_DIR given "
                                     "(imported or trained priors).")
    lst.add_argument("dirs", nargs="*", metavar="PRIOR_DIR", help="prior folders to list too")
    lst.add_argument("--json", action="store_true", help="print a JSON list instead")
    show = sub.add_parser("show", help="print a prior's model card (a shipped name or a prior folder)")
    show.add_argument("prior", metavar="NAME|PRIOR_DIR")
    imp = sub.add_parser(
        "import", help="convert a published checkpoint (read with torch.load(weights_only=True), "
                       "never executing code) into a medrecon prior directory",
        description="Convert a published checkpoint into a medrecon prior directory "
                    "(model_card.json + ema.safetensors [+ raw.safetensors]). The EMA weights are "
                    "applied for NCSN++ checkpoints.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    imp.add_argument("--format", required=True, choices=("ncsnpp", "adm"),
                     help="ncsnpp: DiffusionMBIR checkpoint dict (model/ema/optimizer/step), e.g. "
                          "checkpoint_185.pth; adm: DDS plain state dict, e.g. AAPM256_1M.pt")
    imp.add_argument("file", metavar="FILE", help="the published .pth/.pt file")
    imp.add_argument("--config", default=None, metavar="JSON/YAML",
                     help="network configuration (published key names; optional 'intensity' and "
                          "'name' sections for the model card); default: the published AAPM-256 "
                          "config in configs/published/")
    imp.add_argument("--output", required=True, metavar="PRIOR_DIR",
                     help="prior directory to create")
    imp.add_argument("--name", default=None,
                     help="name recorded in the model card; if omitted: the 'name' in --config, "
                          "else the output directory name")
    imp.add_argument("--overwrite", action="store_true",
                     help="replace PRIOR_DIR if it exists")


def _list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from medrecon.io.jsonio import json_text
    from medrecon.prior.catalog import DEFAULT_PRIORS, format_prior_line, list_priors

    priors = list_priors(args.dirs)
    if args.json:
        print(json_text([asdict(p) for p in priors]))
        return 0
    for p in priors:
        print(format_prior_line(p) + ("" if p.shipped else f"  ({p.path})"))
    defaults = "; ".join(f"{k}: {', '.join(v)}" for k, v in DEFAULT_PRIORS.items())
    print(f"default without --prior: the first that fits the data's modality and pixel spacing ({defaults}; "
          f"CT in a.u.: phantom)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from medrecon.io.jsonio import json_text
    from medrecon.prior.card import read_card, resolve

    print(json_text(read_card(resolve(args.prior))))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.prior_action == "list":
        return _list(args)
    if args.prior_action == "show":
        return _show(args)
    if args.prior_action == "import":
        from medrecon.provenance import provenance
        from medrecon.published.importer import import_published, read_config

        from medrecon.io.outputs import OutputPlan

        plan = OutputPlan(overwrite=args.overwrite)
        plan.add_input(args.file, "FILE")
        plan.add_input(args.config, "--config")
        plan.add_workdir(args.output, "--output")  # written atomically by the importer
        plan.check()
        config = read_config(args.config, args.format)
        prov = provenance(inputs=[args.file, args.config], command=getattr(args, "command_line", None))
        with plan.open():
            out = import_published(args.format, args.file, args.output, config=config,
                                   name=args.name, overwrite=args.overwrite, provenance=prov)
        log.info("wrote prior %s", out)
        print(out)
        return 0
    raise AssertionError(f"unhandled prior action {args.prior_action!r}")
