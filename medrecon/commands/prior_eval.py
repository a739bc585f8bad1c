"""``medrecon prior-eval``: how good is a prior? Denoising PSNR vs best-weight TV, and samples."""

from __future__ import annotations

import argparse
from pathlib import Path

from medrecon.device import DEVICE_CHOICES

NAME = "prior-eval"
HELP = ("Measure a prior on held-out slices: one-step denoising PSNR at several noise levels next to a "
        "TV denoiser at its best weight, and a figure of unconditional samples next to real slices.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prior", metavar="PRIOR", help="shipped prior name (phantom, chest-ct, brain-mri) or directory")
    p.add_argument("--data", required=True, nargs="+",
                   help="held-out slices: 'phantoms' (test seeds >= 1000000), 'chest-ct' (test slab 41-64), "
                        "'brain-mri' (MNI template test slab), 'lung2' / 'brain2' (held-out sample subjects), "
                        "'ct-sample-set' / 'body-ct-sample-set' / 'mr-sample-set' (the validation slices of "
                        "that training set, split and pixel spacings as the prior's card records), "
                        "or NIfTI / NRRD files / DICOM directories (in the prior's intensity convention: its "
                        "window, or the normalised magnitude of an MR prior)")
    p.add_argument("--slices", type=int, default=16, help="number of held-out slices to use (evenly spaced)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4],
                   help="noise levels in prior units ([0, 1] window)")
    p.add_argument("--samples", type=int, default=4, help="unconditional samples in the figure (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the samples")
    p.add_argument("--output", default=None, metavar="DIR", help="write prior_eval.json and samples.png here")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to run the prior")


def held_out_slices(data: list[str], card: dict, size: int):
    """``[N, H, W]`` held-out slices in the prior's units (the training pipeline's own preparation,
    :func:`medrecon.prior.data.training_slices`, under the card's intensity convention)."""
    import numpy as np
    import torch

    from medrecon import datasets
    from medrecon.io import load_volume
    from medrecon.commands.train import SAMPLE_SETS
    from medrecon.prior.data import training_slices

    if len(data) == 1 and data[0] in SAMPLE_SETS:      # the prior's own validation slices
        from medrecon.training_sets import sample_training_set
        config = card.get("training", {}).get("config", {})
        return sample_training_set(SAMPLE_SETS[data[0]], size, spacings=config.get("pixel_spacings"),
                                   crop=int(config.get("crop", 64))).val
    if data == ["phantoms"]:
        from medrecon.phantoms import TEST_SEED_START, random_ellipsoids
        contrast = "mr" if "mr" in str(card.get("training", {}).get("data", "")).lower() else "ct"
        vols = [random_ellipsoids((8, size, size), TEST_SEED_START + 100 + k, contrast) for k in range(2)]
        return torch.from_numpy(np.concatenate(vols))
    intensity = dict(card["intensity"])
    if intensity.get("convention") == "normalised":
        intensity.update(intensity["normalisation"])
    if data == ["chest-ct"]:
        volumes = [datasets.chest_ct_slab("test", size)]
    elif data == ["brain-mri"]:
        volumes = [datasets.brain_mri_slab("test", size)]
    elif data in (["lung2"], ["brain2"]):
        volumes = [datasets.real_volume(data[0])]
    else:
        volumes = [load_volume(p) for p in data]
    return torch.from_numpy(np.concatenate([training_slices(v, size, intensity) for v in volumes]))


def run(args: argparse.Namespace) -> int:
    import torch

    from medrecon.device import resolve_device
    from medrecon.provenance import provenance, write_json
    import medrecon.published  # noqa: F401 -- registers the published families (ncsnpp, adm)
    from medrecon.prior.checkpoint import load_prior
    from medrecon.prior.evaluate import denoising_table, edm_samples, samples_figure

    from medrecon.io.atomic import atomic_path
    from medrecon.io.outputs import OutputPlan

    plan = OutputPlan(overwrite=True)  # a results folder: its two files are replaced
    plan.add_inputs([d for d in args.data if Path(d).exists()], "--data")
    plan.add_input(args.prior if Path(args.prior).exists() else None, "--prior")
    outputs = {}
    if args.output:
        outputs["json"] = plan.add_file(Path(args.output) / "prior_eval.json", "--output")
        if args.samples > 0:
            outputs["png"] = plan.add_file(Path(args.output) / "samples.png", "--output")
    plan.check()
    device = resolve_device(args.device)
    prior = load_prior(args.prior, device=device)
    slices = held_out_slices(args.data, prior.card, prior.image_size)
    idx = torch.linspace(0, slices.shape[0] - 1, min(args.slices, slices.shape[0])).round().long()
    slices = slices[idx]
    rows = denoising_table(prior, slices, args.sigmas, args.seed, device)
    print(f"prior {prior.card['name']} on {len(slices)} held-out slices ({' '.join(args.data)}):")
    print(f"{'sigma':>6} {'noisy':>7} {'prior':>7} {'best TV':>8} {'TV weight':>9} {'gain':>6}")
    for r in rows:
        print(f"{r['sigma']:6.3f} {r['noisy_psnr']:7.2f} {r['prior_psnr']:7.2f} {r['tv_psnr']:8.2f} "
              f"{r['tv_weight']:9.4f} {r['gain_over_tv_db']:+6.2f}")
    if args.output:
        prov = provenance(device=device, seed=args.seed, prior=args.prior,
                          inputs=[d for d in args.data if Path(d).exists()],
                          command=getattr(args, "command_line", None))
        with plan.open() as staged:
            result = {"prior": prior.card["name"], "data": args.data, "slices": int(len(slices)),
                      "seed": args.seed, "denoising": rows}
            write_json(staged.path(outputs["json"]), result, prov)
            if args.samples > 0:
                samples = edm_samples(prior, args.samples, seed=args.seed, device=device)
                png = samples_figure(samples.clamp(0, 1), slices[: args.samples],
                                     title=f"{prior.card['name']}: samples (top), held-out (bottom)")
                with atomic_path(staged.path(outputs["png"]), overwrite=True, what="figure") as tmp:
                    tmp.write_bytes(png)
        print(f"wrote {Path(args.output) / 'prior_eval.json'}")
    return 0
