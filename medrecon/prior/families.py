"""Architecture families of priors: how a model card's ``architecture.family`` becomes a network.

Every family registers a builder here (:func:`register_family`); the loader
(:func:`medrecon.prior.checkpoint.load_prior`) looks the card's family up in :data:`FAMILIES`
and names no family itself. medrecon's own ``edm-unet`` (:mod:`medrecon.prior.network`)
registers below, its module imported when a prior of it is built (MONAI is slow to import).
Other families register when their package is imported: the published DiffusionMBIR and DDS
networks (``ncsnpp``, ``adm``) when :mod:`medrecon.published` is. A card naming a family nobody
has registered makes the loader import the packages installed under the entry-point group
``medrecon.prior_families`` (medrecon's own pyproject lists :mod:`medrecon.published`; another
package can add its own) before it gives up, so ``load_prior`` works on any prior directory
without the caller knowing which package builds it.

A builder is called as ``build(card, state, directory=..., weights=..., device=...)``: the model
card, the weights (a state dict read from safetensors, already checked finite), the prior
directory and the weights file (for messages) and the device. It returns the
:class:`~medrecon.prior.denoiser.Denoiser` (the loader then moves it to the device, sets eval mode
and freezes it) and raises :class:`~medrecon.errors.DataError` when the card or the weights do
not fit the family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from medrecon.errors import DataError
from medrecon.prior.denoiser import Denoiser


class FamilyBuilder(Protocol):
    def __call__(self, card: dict, state: dict[str, torch.Tensor], *, directory: Path,
                 weights: Path, device: torch.device | str) -> Denoiser: ...


FAMILIES: dict[str, FamilyBuilder] = {}
"""Architecture family name -> its builder."""


def register_family(name: str, build: FamilyBuilder) -> None:
    """Make priors of architecture family ``name`` loadable with ``build`` (a later registration
    of the same name replaces the earlier one)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a family needs a non-empty name, got {name!r}")
    FAMILIES[name] = build


PLUGIN_GROUP = "medrecon.prior_families"


def load_family_plugins() -> None:
    """Import every package installed under the entry-point group :data:`PLUGIN_GROUP`
    (importing one registers its families)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()


def family_builder(family: object, card_path: Path) -> FamilyBuilder:
    """The builder of ``family``; a :class:`~medrecon.errors.DataError` naming the card when no
    family of that name is registered."""
    build = FAMILIES.get(family) if isinstance(family, str) else None
    if build is None and isinstance(family, str):
        load_family_plugins()
        build = FAMILIES.get(family)
    if build is None:
        raise DataError(f"{card_path}: unknown architecture family {family!r} (known: "
                        f"{', '.join(sorted(FAMILIES))})")
    return build


def _edm_unet(card: dict, state: dict[str, torch.Tensor], *, directory: Path, weights: Path,
              device: torch.device | str) -> Denoiser:
    from medrecon.prior.network import from_card

    return from_card(card, state, directory=directory, weights=weights, device=device)


register_family("edm-unet", _edm_unet)
