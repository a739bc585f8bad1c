#!/usr/bin/env python3
"""Copy the measured tables into README.md, between ``<!-- BEGIN name -->`` / ``<!-- END name -->``.

Sources (all produced by commands in this repository, which the tables name):
- ``classical``: benchmarks/results/classical.md (``python benchmarks/classical.py``)
- ``diffusion``: benchmarks/results/diffusion-*/diffusion.md (``python benchmarks/diffusion.py ...``;
  one run per group of cases, each table names its command)
- ``denoising``: benchmarks/results/denoising/denoising.md (``python benchmarks/denoising.py``)
- ``demo``: benchmarks/results/demo/demo.md (``python benchmarks/demo.py``)
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

REPO = Path(__file__).resolve().parents[1]
PRIORS = ("phantom", "chest-ct", "brain-mri")
EVAL_DATA = {"phantom": "phantoms", "chest-ct": "lung2", "brain-mri": "brain2"}


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


def priors_table() -> str:
    weights = REPO / "medrecon" / "prior" / "weights"
    lines = ["| prior | parameters | training steps | training slices | final loss (train / val) | "
             "sigma | noisy PSNR | prior PSNR | best-TV PSNR | gain over TV |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    commands = []
    for name in PRIORS:
        card = json.loads((weights / name / "model_card.json").read_text())
        ev = json.loads((weights / name / "prior_eval.json").read_text())
        t = card["training"]
        for k, row in enumerate(ev["denoising"]):
            head = (f"| `{name}` | {card['parameters']:,} | {t['steps']} | {t['train_slices']} | "
                    f"{t['final_loss']:.4f} / {t['final_val_loss']:.4f} ") if k == 0 else "| | | | | "
            lines.append(head + f"| {row['sigma']:g} | {row['noisy_psnr']:.2f} | {row['prior_psnr']:.2f} | "
                         f"{row['tv_psnr']:.2f} | {row['gain_over_tv_db']:+.2f} dB |")
        commands.append(f"- `{name}`: `{t['command']}`; then "
                        f"`medrecon prior-eval {name} --data {EVAL_DATA[name]} --output "
                        f"medrecon/prior/weights/{name}` ({ev['slices']} held-out slices, seed {ev['seed']})")
    return "\n".join(lines + ["", "Commands:", ""] + commands)


_COMMAND = re.compile(r"(^|`)(python|medrecon) ", re.M)


def venv_commands(text: str) -> str:
    """``python x`` / ``medrecon x`` at the start of a line or of inline code -> ``.venv/bin/...``."""
    return _COMMAND.sub(lambda m: f"{m.group(1)}.venv/bin/{m.group(2)} ", text)


def replace(readme: str, name: str, body: str) -> str:
    pattern = re.compile(rf"<!-- BEGIN {name} -->.*?<!-- END {name} -->", re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no <!-- BEGIN {name} --> ... <!-- END {name} --> block")
    return pattern.sub(lambda m: f"<!-- BEGIN {name} -->\n{body}\n<!-- END {name} -->", readme)


def main() -> int:
    path = REPO / "README.md"
    readme = path.read_text()
    sources = {"classical": benchmark_table, "diffusion": benchmark_table, "denoising": benchmark_table,
               "demo": benchmark_table, "priors": lambda _: priors_table()}
    for name, make in sources.items():
        if f"<!-- BEGIN {name} -->" in readme:
            readme = replace(readme, name, venv_commands(make(name)))
    path.write_text(readme)
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
