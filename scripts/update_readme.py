#!/usr/bin/env python3
"""Copy the measured tables into README.md and the documentation pages (docs/**/*.md), between
``<!-- BEGIN name -->`` / ``<!-- END name -->`` (every file and every block that names a source).

Sources (all produced by commands in this repository, which the tables name):
- ``classical``: benchmarks/results/classical.md (``python benchmarks/classical.py``)
- ``diffusion``: benchmarks/results/diffusion-*/diffusion.md (``python benchmarks/diffusion.py ...``;
  one run per group of cases, each table names its command)
- ``denoising``: benchmarks/results/denoising/denoising.md (``python benchmarks/denoising.py``)
- ``demo``: benchmarks/results/demo/demo.md (``python benchmarks/demo.py``)
- ``noise_weight``: benchmarks/results/noise_weight/noise_weight.md (``python benchmarks/noise_weight.py``)
- ``diffusion-summary``: one line per held-out case from benchmarks/results/diffusion-*/diffusion.json
  (:func:`diffusion_summary`)
- ``any-size-summary``: the resolution benchmarks (128, 256, 512 pixels) from
  benchmarks/results/any-size-*/diffusion.json (:func:`any_size_summary`); ``any-size-defaults``
  (the README's): only its rows of the default CT prior with default settings
- ``z-coupling-summary``: DDS with TV-z against correlated noise and the slice-group prior from
  benchmarks/results/z-coupling-*/ and any-size-128-*/diffusion.json (:func:`z_coupling_summary`)
- ``fewstep``: benchmarks/results/fewstep/fewstep.md (``python benchmarks/fewstep.py``)
- ``network_precision``: benchmarks/results/network_precision/network_precision.md
  (``python benchmarks/network_precision.py --compile``)
- ``adaptation``: benchmarks/results/adaptation/adaptation.md (``python benchmarks/adaptation.py``);
  ``adaptation-summary``: its first table (one line per development case)
- ``priors``: medrecon/prior/weights/*/model_card.json and prior_eval.json
  (``medrecon train ...`` and ``medrecon prior-eval ...``)

    .venv/bin/python scripts/update_readme.py

Commands in the copied text are written as they run after the README's two set-up commands:
``python ...`` and ``medrecon ...`` become ``.venv/bin/python ...`` and ``.venv/bin/medrecon ...``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
PRIORS = ("phantom", "chest-ct", "body-ct", "brain-mri")
EVAL_DATA = {"phantom": "phantoms", "chest-ct": "lung2", "body-ct": "body-ct-sample-set", "brain-mri": "brain2"}


def benchmark_table(name: str) -> str:
    """The benchmark's markdown, headings demoted to level 4 (several runs: one after the other)."""
    results = REPO / "benchmarks" / "results"
    files = [results / f"{name}.md"] if (results / f"{name}.md").is_file() else \
        sorted(results.glob(f"{name}/{name}.md")) + sorted(results.glob(f"{name}-*/{name}.md"))
    if not files:
        raise SystemExit(f"no benchmark results for {name} under {results}")
    texts = [f.read_text().strip() for f in files]
    # the benchmarks' own headings (their titles included) sit below the README's "###" level
    return "\n\n".join(re.sub(r"^#{1,3} ", "#### ", t, flags=re.M) for t in texts)


def adaptation_summary(text: Optional[str] = None) -> str:
    """The summary table of the adaptation benchmark with its legend and machine line: its text
    before the per-case sections without the title, the commands and the fit-only table (those
    stay on the benchmark page)."""
    if text is None:
        text = (REPO / "benchmarks" / "results" / "adaptation" / "adaptation.md").read_text()
    head = text.split("\n## ", 1)[0].split("\nHeld-out prediction ratio alone", 1)[0]
    keep = [line for line in head.strip().splitlines()
            if not line.startswith(("# ", "Commands", "    "))]
    return "\n".join(keep).strip().replace("\n\n\n", "\n\n") + \
        "\n\nCommands and the fit-only table: [adaptation page](docs/benchmarks/adaptation.md)."


def priors_table() -> str:
    weights = REPO / "medrecon" / "prior" / "weights"
    sys.path.insert(0, str(REPO))
    from medrecon.prior.card import training_lineage

    lines = ["| prior | parameters | training steps: this run (all runs, crops seen) | training slices | final loss (train / val) | "
             "sigma | noisy PSNR | prior PSNR | best-TV PSNR | gain over TV |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    commands = []
    for name in PRIORS:
        card = json.loads((weights / name / "model_card.json").read_text())
        ev = json.loads((weights / name / "prior_eval.json").read_text())
        t = card["training"]
        for k, row in enumerate(ev["denoising"]):
            total_steps, total_samples = training_lineage(card)
            head = (f"| `{name}` | {card['parameters']:,} | {t['steps']} ({total_steps}, "
                    f"{total_samples:,}) | {t['train_slices']} | "
                    f"{t['final_loss']:.4f} / {t['final_val_loss']:.4f} ") if k == 0 else "| | | | | "
            lines.append(head + f"| {row['sigma']:g} | {row['noisy_psnr']:.2f} | {row['prior_psnr']:.2f} | "
                         f"{row['tv_psnr']:.2f} | {row['gain_over_tv_db']:+.2f} dB |")
        commands.append(f"- `{name}`: `{t['command']}`; then "
                        f"`medrecon prior-eval {name} --data {EVAL_DATA[name]} --output "
                        f"medrecon/prior/weights/{name}` ({ev['slices']} "
                        f"{'validation' if EVAL_DATA[name].endswith('sample-set') else 'held-out'} slices, "
                        f"seed {ev['seed']})")
    return "\n".join(lines + ["", "Commands:", ""] + commands)


# issue 11's targets: DDS (50 steps) minus the best baseline (CT: best-of-grid ADMM-TV; MR: the
# larger of SENSE and best-of-grid TV), in dB
TARGETS = {"sv8": 2.5, "sv4": 3.0, "la90": 2.0, "x8-u1d": 2.0, "x8-u1d-noisy": 2.0}
FINGERPRINT = ("fbp", "zero-filled")   # cheap rows that identify a case's simulated data


def _runs() -> list[dict]:
    results = REPO / "benchmarks" / "results"
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("diffusion-*/diffusion.json"))]
    return sorted(runs, key=lambda r: r["date"])


def diffusion_summary(runs: Optional[list[dict]] = None) -> str:
    """One line per held-out case: DDS at 10/20/50 steps from the newest run that has them,
    against the best baseline of every run of the same simulated data (matched by the FBP or
    zero-filled PSNR, which do not depend on a prior), with the target and the verdict."""
    runs = _runs() if runs is None else sorted(runs, key=lambda r: r["date"])
    cases: dict[str, dict] = {}
    for run in runs:
        for r in run["rows"]:
            if "error" not in r:
                cases.setdefault(r["case"], {"label": r["label"]})
    order = [f"{d}-{t}" for d in ("lung2", "chest-ct") for t in ("sv8", "sv4", "la90")] + \
        ["brain2-x8-u1d", "brain2-x8-u1d-noisy"]
    cases = dict(sorted(cases.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                         else len(order), kv[0])))
    lines = ["| case | best baseline | DDS 10 / 20 / 50 steps | DDS - baseline | target | | "
             "coronal / sagittal: DDS vs best TV | DDS 50 time (s) | runs |",
             "|---|---:|---:|---:|---:|---|---|---:|---|"]
    for key, case in cases.items():
        dds_runs = [run for run in runs if any(r["case"] == key and r["method"] == "dds"
                                               and r["row"].startswith("DDS (") for r in run["rows"])]
        if not dds_runs:
            continue
        latest = dds_runs[-1]
        rows = [r for r in latest["rows"] if r["case"] == key and "error" not in r]
        finger = {r["method"]: r["psnr"] for r in rows if r["method"] in FINGERPRINT}
        same = [run for run in runs if any(
            r["case"] == key and r["method"] in finger and abs(r["psnr"] - finger[r["method"]]) < 5e-3
            for r in run["rows"] if "error" not in r)]
        base = [(r, run) for run in same for r in run["rows"]
                if r["case"] == key and r["method"] in ("tv", "sense") and "error" not in r]
        tv = [(r, run) for r, run in base if r["method"] == "tv"]
        if not tv:
            continue
        best_tv = max(tv, key=lambda b: b[0]["psnr"])
        best = max(base, key=lambda b: b[0]["psnr"])
        dds = {r["nfe_per_slice"]: r for r in rows if r["method"] == "dds" and r["row"].startswith("DDS (")}
        top = dds[max(dds)]
        gain = top["psnr"] - best[0]["psnr"]
        target = next((v for k, v in TARGETS.items() if key.endswith("-" + k)), None)
        verdict = "" if target is None else ("met" if gain >= target else f"not met ({gain - target:+.2f})")
        planes = " / ".join(f"{top['planes'][p]['psnr']:.2f} vs {best_tv[0]['planes'][p]['psnr']:.2f}"
                            for p in ("coronal", "sagittal"))
        name = "SENSE" if best[0]["method"] == "sense" else f"TV {best[0]['settings'].get('lam_rel', 0):g}"
        lines.append(f"| {case['label']} | {best[0]['psnr']:.2f} ({name}) | "
                     + " / ".join(f"{dds[k]['psnr']:.2f}" for k in sorted(dds))
                     + f" | {gain:+.2f} | {'' if target is None else f'+{target:g}'} | {verdict} | "
                     f"{planes} | {top['seconds']:.0f} | DDS: git {latest['git']}, {latest['date'][:10]}; "
                     f"baseline: git {best[1]['git']} |")
    return "\n".join(lines)


# issue 19's targets at the study's resolution: DDS (50 steps) minus the best ADMM-TV of the grid, dB
ANY_SIZE_TARGETS = {(256, "lung2-sv8"): 2.5, (256, "chest-ct-sv8"): 2.5, (256, "lung2-sv16"): 2.0,
                    (256, "chest-ct-sv16"): 2.0, (128, "pelvis-sv8"): 1.5, (256, "pelvis-sv8"): 1.5,
                    (512, "lung2-sv32"): 0.0}


def any_size_summary(runs: Optional[list[dict]] = None, defaults_only: bool = False) -> str:
    """One line per (matrix size, case, prior) of the resolution benchmarks
    (benchmarks/results/any-size-*/diffusion.json): DDS against the best ADMM-TV, SIRT and FBP of
    every run of the same simulated data (same size, case and FBP PSNR), per plane, with time and
    peak memory, the target and the verdict. ``defaults_only`` (the README's block): only the rows
    of the default CT prior with the default settings (no ``key=value`` in the row's name)."""
    results = REPO / "benchmarks" / "results"
    if runs is None:
        runs = [json.loads(p.read_text()) for p in sorted(results.glob("any-size-*/diffusion.json"))
                + sorted(results.glob("diffusion-*/diffusion.json"))]
    runs = sorted(runs, key=lambda r: r["date"])
    from medrecon.prior.catalog import DEFAULT_PRIORS
    sys.path.insert(0, str(REPO / "benchmarks"))
    from diffusion import DEFAULT_RUN              # the label of the benchmark's default-run rows
    default_ct = DEFAULT_PRIORS["CT"][0]          # the shipped prior CT data gets first
    lines = ["| size | case | prior | FBP | SIRT | best ADMM-TV | DDS | DDS - TV | target | | "
             "coronal / sagittal: DDS vs TV | DDS time (s) | DDS peak memory (MB) | runs |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|"]
    for run in runs:
        size = run["shape"][1]
        for top in [r for r in run["rows"] if r["method"] == "dds" and "error" not in r
                    and ", prior " in r["row"]]:
            key = top["case"]
            fbp = next(r for r in run["rows"] if r["case"] == key and r["method"] == "fbp")
            same = [(r, other) for other in runs if other["shape"] == run["shape"] for r in other["rows"]
                    if r["case"] == key and "error" not in r and any(
                        f["case"] == key and f["method"] == "fbp" and abs(f["psnr"] - fbp["psnr"]) < 5e-3
                        for f in other["rows"])]
            tv = [(r, o) for r, o in same if r["method"] == "tv"]
            sirt = [r for r, _ in same if r["method"] == "sirt"]
            if not tv or not sirt:
                continue
            best, best_run = max(tv, key=lambda b: b[0]["psnr"])
            gain = top["psnr"] - best["psnr"]
            target = ANY_SIZE_TARGETS.get((size, key))
            verdict = "" if target is None else ("met" if gain >= target else f"not met ({gain - target:+.2f})")
            today = [r for r, _ in same if r["method"] == "dds" and r["row"] == "DDS (50 steps)"]
            if target is None and today:   # the 128 cases of the held-out benchmark: no regression
                change = top["psnr"] - today[-1]["psnr"]
                verdict = f"{change:+.2f} vs today's DDS ({'met' if change >= -0.3 else 'not met'}: >= -0.3)"
            prior = top["row"].split("prior ", 1)[-1]     # the prior and any settings the row names
            if defaults_only and ("=" in prior or not prior.startswith(default_ct)):
                continue
            if top["row"].startswith(DEFAULT_RUN):         # the path the prior-fit check chose
                prior = prior.replace(" (", ", default run: ", 1).rstrip(")")
                prior += f", {top['nfe_per_slice']:g} steps" if top.get("nfe_per_slice") else ""
            planes = " / ".join(f"{top['planes'][p]['psnr']:.2f} vs {best['planes'][p]['psnr']:.2f}"
                                for p in ("coronal", "sagittal"))
            lines.append(f"| {size} | {top['label']} ({run['shape'][0]} slices) | {prior} | {fbp['psnr']:.2f} | "
                         f"{max(r['psnr'] for r in sirt):.2f} | {best['psnr']:.2f} "
                         f"(lam_rel {best['settings'].get('lam_rel', 0):g}) | {top['psnr']:.2f} | {gain:+.2f} | "
                         f"{'' if target is None else f'+{target:g}'} | {verdict} | {planes} | "
                         f"{top['seconds']:.0f} | {top['peak_mb']:.0f} | DDS: git {run['git']}, "
                         f"{run['date'][:10]}; TV: git {best_run['git']} |")
    return "\n".join(lines)


def _same_start(variant: str) -> str:
    """Today's DDS with the start of ``variant`` ("prior NAME, key=value, ..."): the 2D body-ct
    prior with the variant's start_sigma setting, if any, and nothing else."""
    start = [part for part in variant.split(", ")[1:] if part.startswith("start_sigma=")]
    return ", ".join(["prior body-ct", *start])


def z_coupling_summary(runs: Optional[list[dict]] = None) -> str:
    """One line per (case, DDS variant) of the z-coupling benchmark: today's 2D DDS + TV-z
    (``DDS (50 steps), prior body-ct`` of any run), correlated re-noising and the slice-group
    prior (benchmarks/results/z-coupling-*/diffusion.json), per plane, with the change against
    today's DDS on the same simulated data (matched by the FBP PSNR), network calls per slice
    and time; issue 20's verdict on the 8-view lung2 and chest cases."""
    results = REPO / "benchmarks" / "results"
    if runs is None:
        runs = [json.loads(p.read_text()) for p in sorted(results.glob("z-coupling-*/diffusion.json"))
                + sorted(results.glob("any-size-128-*/diffusion.json"))]
    runs = [r for r in sorted(runs, key=lambda r: r["date"]) if r["shape"] == [24, 128, 128]]
    fbp = {}
    for run in runs:
        for r in run["rows"]:
            if r["method"] == "fbp" and "error" not in r:
                fbp.setdefault(r["case"], r["psnr"])
    rows: dict[str, dict[str, tuple[dict, dict]]] = {}
    for run in runs:
        for r in run["rows"]:
            if r["method"] != "dds" or "error" in r or r["case"] not in fbp:
                continue
            same = any(f["case"] == r["case"] and f["method"] == "fbp" and abs(f["psnr"] - fbp[r["case"]]) < 5e-3
                       for f in run["rows"]) or not any(f["method"] == "fbp" for f in run["rows"])
            if same and r["row"].startswith("DDS (50 steps), prior body-ct"):
                rows.setdefault(r["case"], {})[r["row"].removeprefix("DDS (50 steps), ")] = (r, run)
    order = [f"{d}-{t}" for d in ("dev-lung1", "dev-abdomen", "lung2", "chest-ct", "pelvis")
             for t in ("sv8", "sv4", "la90")]
    lines = ["| case | DDS variant (50 steps) | PSNR | SSIM | axial | coronal | sagittal | "
             "change vs today (all / cor / sag) | NFE/slice | time (s) | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for key in sorted(rows, key=lambda k: (order.index(k) if k in order else len(order), k)):
        variants = rows[key]
        baseline = {name: _same_start(name) for name in variants}
        coupled = [v for name, v in variants.items() if name != baseline[name] and "start_sigma=" not in name]
        best = max(coupled, key=lambda v: v[0]["psnr"]) if coupled else None
        for name, (r, run) in variants.items():
            p = {k: r["planes"][k]["psnr"] for k in ("axial", "coronal", "sagittal")}
            change = verdict = ""
            # each variant against today's DDS (2D body-ct + TV-z) with the same start
            today = variants.get(baseline[name])
            if today is not None and name != baseline[name]:
                t = today[0]
                d = (r["psnr"] - t["psnr"], p["coronal"] - t["planes"]["coronal"]["psnr"],
                     p["sagittal"] - t["planes"]["sagittal"]["psnr"])
                change = " / ".join(f"{v:+.2f}" for v in d)
                if best is not None and r is best[0] and not key.startswith("dev-"):
                    if key in ("lung2-sv8", "chest-ct-sv8"):
                        ok = d[0] >= 0.5 and d[1] >= 1.0 and d[2] >= 1.0
                        verdict = "best: " + ("met" if ok else "not met") + " (+0.5 / +1.0 / +1.0)"
                    else:
                        verdict = "best: " + ("met" if d[0] >= -0.2 else "not met") + " (>= -0.2)"
            nfe = float(r["nfe_per_slice"])
            label = r["label"] + (" (development: settings chosen here)" if key.startswith("dev-") else "")
            lines.append(f"| {label} | {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {p['axial']:.2f} | "
                         f"{p['coronal']:.2f} | {p['sagittal']:.2f} | {change} | {nfe:.1f} | "
                         f"{r['seconds']:.0f} | {verdict} |")
    return "\n".join(lines)


_COMMAND = re.compile(r"(^|`)(python|medrecon) ", re.M)


def venv_commands(text: str) -> str:
    """``python x`` / ``medrecon x`` at the start of a line or of inline code -> ``.venv/bin/...``."""
    return _COMMAND.sub(lambda m: f"{m.group(1)}.venv/bin/{m.group(2)} ", text)


def replace(readme: str, name: str, body: str) -> str:
    pattern = re.compile(rf"<!-- BEGIN {name} -->.*?<!-- END {name} -->", re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no <!-- BEGIN {name} --> ... <!-- END {name} --> block")
    return pattern.sub(lambda m: f"<!-- BEGIN {name} -->\n{body}\n<!-- END {name} -->", readme)


def targets() -> list[Path]:
    """The files whose blocks this script writes: README.md and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def update(text: str, sources: dict) -> str:
    """``text`` with every block it holds (of ``sources``) rewritten."""
    for name, make in sources.items():
        if f"<!-- BEGIN {name} -->" in text:
            text = replace(text, name, venv_commands(make(name)))
    return text


def main() -> int:
    sources = {"classical": benchmark_table, "diffusion": benchmark_table, "denoising": benchmark_table,
               "demo": benchmark_table, "noise_weight": benchmark_table,
               "fewstep": benchmark_table, "network_precision": benchmark_table, "adaptation": benchmark_table,
               "adaptation-summary": lambda _: adaptation_summary(),
               "priors": lambda _: priors_table(),
               "diffusion-summary": lambda _: diffusion_summary(),
               "any-size-summary": lambda _: any_size_summary(),
               "any-size-defaults": lambda _: any_size_summary(defaults_only=True),
               "z-coupling-summary": lambda _: z_coupling_summary()}
    cache: dict[str, str] = {}
    cached = {name: (lambda n, make=make: cache.setdefault(n, make(n))) for name, make in sources.items()}
    for path in targets():
        before = path.read_text()
        after = update(before, cached)
        if after != before:
            path.write_text(after)
            print(f"updated {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
