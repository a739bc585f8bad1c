"""The published DiffusionMBIR (NCSN++) and DDS (ADM UNet) networks, re-implemented and importable.

* :func:`build_denoiser` -- an imported prior (model card + EMA state dict) as a medrecon Denoiser.
* :func:`import_published` -- convert a published ``.pth``/``.pt`` into a medrecon prior directory.
* :class:`NCSNpp`, :class:`ADMUNet` -- the networks, configured from a config dict.
* :func:`autocast_context` -- bf16/fp16 autocast for CUDA inference (no-op on CPU).

Importing this package registers the ``ncsnpp`` and ``adm`` architecture families with the prior
loader (:mod:`medrecon.prior.families`), so that imported published priors load by name or folder.
"""

from medrecon.published.adapters import ADMDenoiser, NCSNppDenoiser
from medrecon.published.adm import ADMUNet
from medrecon.published.build import (build_denoiser, build_network, check_state, load_network,
                                      register_families)
from medrecon.published.config import ADMConfig, NCSNppConfig
from medrecon.published.importer import import_published
from medrecon.published.inference import autocast_context, prepare_for_inference
from medrecon.published.ncsnpp import NCSNpp

__all__ = [
    "ADMConfig", "ADMDenoiser", "ADMUNet", "NCSNpp", "NCSNppConfig", "NCSNppDenoiser",
    "autocast_context", "build_denoiser", "build_network", "check_state", "import_published",
    "load_network", "prepare_for_inference",
]

register_families()
