"""scripts/update_readme.py's summary of the diffusion benchmark: DDS from the newest run, the
best baseline from every run of the same simulated data (matched by the FBP row), the verdict."""

import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "update_readme.py"


def _script():
    spec = importlib.util.spec_from_file_location("update_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method: str, psnr: float, row: str = "", nfe: int = 0, **settings) -> dict:
    planes = {p: {"psnr": psnr + k, "ssim": 0.5} for k, p in enumerate(("axial", "coronal", "sagittal"))}
    return {"case": "lung2-sv8", "label": "lung2: 8 views", "row": row or method, "method": method,
            "settings": settings, "psnr": psnr, "ssim": 0.5, "planes": planes,
            "nfe_per_slice": nfe, "seconds": 10.0 * nfe, "peak_mb": 100.0}


def _run(date: str, git: str, rows: list) -> dict:
    return {"date": date, "git": git, "rows": rows}


def test_summary_takes_newest_dds_and_best_matching_baseline() -> None:
    summary = _script().diffusion_summary
    old = _run("2026-01-01T00:00:00", "aaa", [_row("fbp", 15.0), _row("tv", 24.0, lam_rel=1e-4),
                                              _row("dds", 25.0, "DDS (50 steps)", 50)])
    wider_grid = _run("2026-01-02T00:00:00", "bbb", [_row("fbp", 15.0), _row("tv", 25.0, lam_rel=5e-5)])
    other_data = _run("2026-01-03T00:00:00", "ccc", [_row("fbp", 14.0), _row("tv", 30.0, lam_rel=1e-4)])
    new = _run("2026-01-04T00:00:00", "ddd", [_row("fbp", 15.0), _row("dds", 26.0, "DDS (10 steps)", 10),
                                              _row("dds", 27.6, "DDS (50 steps)", 50)])
    line = [ln for ln in summary([new, other_data, old, wider_grid]).splitlines() if "lung2" in ln][0]
    cells = [c.strip() for c in line.split("|")]
    assert cells[2] == "25.00 (TV 5e-05)"         # the wider grid's TV; not the other data's 30 dB
    assert cells[3] == "26.00 / 27.60"            # the newest run's DDS rows
    assert cells[4] == "+2.60" and cells[5] == "+2.5" and cells[6] == "met"
    assert cells[7] == "28.60 vs 26.00 / 29.60 vs 27.00"
    assert "DDS: git ddd" in cells[9] and "baseline: git bbb" in cells[9]
    worse = _run("2026-01-05T00:00:00", "eee", [_row("fbp", 15.0), _row("dds", 27.4, "DDS (50 steps)", 50)])
    line = [ln for ln in summary([old, wider_grid, worse]).splitlines() if "lung2" in ln][0]
    assert "not met (-0.10)" in line


def test_blocks_are_written_into_the_readme_and_the_docs_pages() -> None:
    script = _script()
    names = {p.relative_to(script.REPO).as_posix() for p in script.targets()}
    assert {"README.md", "docs/benchmarks/classical.md", "docs/benchmarks/diffusion.md",
            "docs/priors.md"} <= names
    page = "intro\n<!-- BEGIN demo -->\nold\n<!-- END demo -->\n<!-- BEGIN other -->\nkeep\n<!-- END other -->\n"
    out = script.update(page, {"demo": lambda name: "python benchmarks/demo.py said so"})
    assert "old" not in out and ".venv/bin/python benchmarks/demo.py said so" in out and "keep" in out
    for path in script.targets():          # every block in the repository names a known source
        for name in re.findall(r"<!-- BEGIN (\S+) -->", path.read_text()):
            assert name in ("classical", "diffusion", "denoising", "demo", "noise_weight", "priors",
                            "diffusion-summary", "any-size-summary", "any-size-defaults", "fewstep",
                            "network_precision", "z-coupling-summary", "adaptation",
                            "adaptation-summary"), (path, name)


def test_any_size_summary_matches_data_by_size_and_fbp() -> None:
    """The resolution table: DDS rows named with a prior against the best TV of every run of the
    same size and simulated data (FBP PSNR); today's 128 DDS gives the no-regression verdict."""
    summary = _script().any_size_summary

    def run(date, git, shape, rows):
        return dict(_run(date, git, rows), shape=shape, cases={})

    tv128 = run("2026-01-01T00:00:00", "aaa", [24, 128, 128],
                [_row("fbp", 15.0), _row("sirt", 22.0), _row("tv", 25.0, lam_rel=2e-4),
                 _row("dds", 27.6, "DDS (50 steps)", 50)])
    dds128 = run("2026-01-02T00:00:00", "bbb", [24, 128, 128],
                 [_row("fbp", 15.0), _row("sirt", 22.0), _row("dds", 27.4, "DDS (50 steps), prior body-ct", 50)])
    tv256 = run("2026-01-03T00:00:00", "ccc", [12, 256, 256],
                [_row("fbp", 13.0), _row("sirt", 21.0), _row("tv", 24.0, lam_rel=2e-4),
                 _row("tv", 24.5, lam_rel=1e-4)])
    other = run("2026-01-03T00:00:00", "ddd", [12, 256, 256], [_row("fbp", 12.0), _row("tv", 40.0, lam_rel=1e-4)])
    dds256 = run("2026-01-04T00:00:00", "eee", [12, 256, 256],
                 [_row("fbp", 13.0), _row("sirt", 21.0), _row("dds", 27.1, "DDS (50 steps), prior body-ct", 50)])
    lines = summary([dds256, other, tv128, dds128, tv256]).splitlines()[2:]
    assert len(lines) == 2
    c128 = [c.strip() for c in lines[0].split("|")]
    c256 = [c.strip() for c in lines[1].split("|")]
    assert c128[1] == "128" and c128[6] == "25.00 (lam_rel 0.0002)" and c128[8] == "+2.40"
    assert c128[10] == "-0.20 vs today's DDS (met: >= -0.3)"
    assert c256[1] == "256" and c256[6] == "24.50 (lam_rel 0.0001)" and c256[8] == "+2.60"
    assert c256[9] == "+2.5" and c256[10] == "met"


def test_any_size_readme_rows_are_the_default_priors_default_runs() -> None:
    """The README's block keeps the default CT prior's rows with default settings (a default run
    names the path the fit check chose and its steps); the page's block keeps every row."""
    summary = _script().any_size_summary
    rows = [_row("fbp", 13.0), _row("sirt", 21.0), _row("tv", 24.0, lam_rel=2e-4),
            _row("dds", 26.0, "DDS (50 steps), prior body-ct", 50),
            _row("dds", 26.2, "DDS (50 steps), prior body-ct, cg_iterations=3", 50),
            _row("dds", 25.0, "DDS (50 steps), prior chest-ct", 50),
            _row("dds", 24.3, "DDS, default run, prior body-ct (safe start)", 10)]
    run = dict(_run("2026-01-04T00:00:00", "eee", rows), shape=[12, 256, 256], cases={})
    every = [line.split("|")[3].strip() for line in summary([run]).splitlines()[2:]]
    assert every == ["body-ct", "body-ct, cg_iterations=3", "chest-ct",
                     "body-ct, default run: safe start, 10 steps"]
    readme = [line.split("|")[3].strip() for line in summary([run], defaults_only=True).splitlines()[2:]]
    assert readme == ["body-ct", "body-ct, default run: safe start, 10 steps"]


def test_z_coupling_summary_compares_each_variant_with_todays_dds_of_the_same_start() -> None:
    """Variants against today's DDS (warm start) or DDS from noise (start_sigma=0) on the same
    simulated data; the verdict goes to the best coupled variant of a held-out 8-view case,
    none to development cases."""
    summary = _script().z_coupling_summary

    def run(date, rows):
        return dict(_run(date, "abc", rows), shape=[24, 128, 128], cases={})

    def dds(case, name, psnr, cor, sag, nfe=50):
        r = _row("dds", psnr, f"DDS (50 steps), prior {name}", nfe)
        r.update(case=case, label=case, planes={"axial": {"psnr": psnr}, "coronal": {"psnr": cor},
                                                 "sagittal": {"psnr": sag}})
        return r

    def fbp(case):
        return dict(_row("fbp", 15.0), case=case, label=case)

    runs = [run("2026-01-01T00:00:00", [fbp("lung2-sv8"), dds("lung2-sv8", "body-ct", 27.0, 29.0, 28.0),
                                        dds("lung2-sv8", "body-ct, start_sigma=0", 26.0, 28.0, 27.0)]),
            run("2026-01-02T00:00:00", [fbp("lung2-sv8"),
                                        dds("lung2-sv8", "body-ct-group, group_combine=tile", 27.6, 30.1, 29.2, 18),
                                        dds("lung2-sv8", "body-ct, slice_noise_period=2", 26.9, 28.5, 27.8),
                                        dds("lung2-sv8", "body-ct, start_sigma=0, slice_noise_period=2",
                                            25.5, 27.5, 26.5)]),
            run("2026-01-03T00:00:00", [fbp("dev-lung1-sv8"),
                                        dds("dev-lung1-sv8", "body-ct-group, group_combine=centre", 29.0, 30.0, 29.0),
                                        dds("dev-lung1-sv8", "body-ct", 29.5, 30.5, 29.5),
                                        dds("dev-lung1-sv8", "body-ct-centre, start_sigma=0.5", 29.2, 30.0, 29.0),
                                        dds("dev-lung1-sv8", "body-ct, start_sigma=0.5", 28.9, 29.8, 28.8)])]
    lines = summary(runs).split("\n")[2:]
    by_variant = {line.split(" | ")[1]: line for line in lines}
    assert "+0.60 / +1.10 / +1.20" in by_variant["prior body-ct-group, group_combine=tile"]
    assert "best: met (+0.5 / +1.0 / +1.0)" in by_variant["prior body-ct-group, group_combine=tile"]
    assert "-0.50 / -0.50 / -0.50" in by_variant["prior body-ct, start_sigma=0, slice_noise_period=2"]
    assert "| 18.0 |" in by_variant["prior body-ct-group, group_combine=tile"]
    dev = by_variant["prior body-ct-group, group_combine=centre"]
    assert "development" in dev and "best:" not in dev and "-0.50 / -0.50 / -0.50" in dev
    # another start: against today's prior with that start, not the default one or from noise
    assert "+0.30 / +0.20 / +0.20" in by_variant["prior body-ct-centre, start_sigma=0.5"]
    assert "| 29.80 | 28.80 |  |" in by_variant["prior body-ct, start_sigma=0.5"]


def test_adaptation_summary_keeps_the_table_and_leaves_commands_to_the_page() -> None:
    text = ("# DDS + adaptation\n\nCommands (each adds its rows):\n\n    python benchmarks/adaptation.py --x\n\n"
            "Machine: m, 1 thread.\n\n| case | DDS |\n|---|---|\n| lung2 | 27.22 |\n\n"
            "Held-out prediction ratio alone (fit.json): `python b`\n\n| case | q |\n|---|---|\n| a | 1 |\n\n"
            "## lung2: per-case rows\n\n| row | PSNR |\n")
    out = _script().adaptation_summary(text)
    assert "| lung2 | 27.22 |" in out and out.startswith("Machine: m")
    assert "python" not in out and "Commands (" not in out and "| a | 1 |" not in out and "per-case" not in out
    assert out.endswith("[adaptation page](docs/benchmarks/adaptation.md).")
