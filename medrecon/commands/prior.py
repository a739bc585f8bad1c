"""``medrecon prior import``: turn a published checkpoint you hold into a medrecon prior directory.

    medrecon prior import --format ncsnpp checkpoint_185.pth --output priors/diffusionmbir
    medrecon prior import --format adm AAPM256_1M.pt --output priors/dds

The result is used like any other prior: ``--prior priors/diffusionmbir``.
"""

from __future__ import annotations

import argparse
import logging

NAME = "prior"
HELP = "manage diffusion priors (import a published DiffusionMBIR/DDS checkpoint)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="prior_action", metavar="ACTION", required=True)
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


def run(args: argparse.Namespace) -> int:
    if args.prior_action == "import":
        from medrecon.provenance import provenance
        from medrecon.published.importer import import_published, read_config

        config = read_config(args.config, args.format)
        prov = provenance(inputs=[args.file, args.config], command=getattr(args, "command_line", None))
        out = import_published(args.format, args.file, args.output, config=config,
                               name=args.name, overwrite=args.overwrite, provenance=prov)
        log.info("wrote prior %s", out)
        print(out)
        return 0
    raise AssertionError(f"unhandled prior action {args.prior_action!r}")
