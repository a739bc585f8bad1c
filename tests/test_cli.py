"""The command line end to end: phantom -> simulate -> reconstruct -> evaluate, and clear errors."""

import json
import subprocess
import sys

import pytest

from medrecon.cli import main


def _run(*argv: str) -> int:
    return main(list(argv))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert _run("phantom", "--kind", "shepp-logan", "--shape", "6", "48", "48", "--output", str(d / "ph.nii.gz")) == 0
    return d


def test_ct_pipeline_reports_metrics(workspace, capsys) -> None:
    d = workspace
    assert _run("simulate", "--task", "sparse-view-ct", "--views", "30", "--input", str(d / "ph.nii.gz"),
                "--output", str(d / "ct.h5")) == 0
    assert _run("--quiet", "reconstruct", "--input", str(d / "ct.h5"), "--method", "fbp",
                "--output", str(d / "fbp.nii.gz")) == 0
    assert _run("evaluate", "--reference", str(d / "ph.nii.gz"), "--recon", str(d / "fbp.nii.gz"),
                "--json", str(d / "fbp.json")) == 0
    metrics = json.loads((d / "fbp.json").read_text())
    assert set(metrics) >= {"psnr", "ssim", "planes"}
    assert set(metrics["planes"]) == {"axial", "coronal", "sagittal"}
    assert metrics["psnr"] > 18.0  # 30-view FBP of a 48x48 Shepp-Logan
    effective = json.loads((d / "fbp.config.json").read_text())
    assert effective["method"] == "fbp" and effective["settings"]["filter"] == "hann"
    # the metrics written by reconstruct (reference stored in the measurement) agree with evaluate
    stored = json.loads((d / "fbp.metrics.json").read_text())
    assert stored["psnr"] == pytest.approx(metrics["psnr"], abs=1e-6)


def test_mri_pipeline_sense_beats_zero_filled(workspace) -> None:
    d = workspace
    assert _run("simulate", "--task", "cs-mri", "--acceleration", "4", "--coils", "4", "--input",
                str(d / "ph.nii.gz"), "--output", str(d / "mr.h5")) == 0
    for method in ("zero-filled", "sense"):
        assert _run("--quiet", "reconstruct", "--input", str(d / "mr.h5"), "--method", method,
                    "--output", str(d / f"{method}.nii.gz")) == 0
    zf = json.loads((d / "zero-filled.metrics.json").read_text())["psnr"]
    se = json.loads((d / "sense.metrics.json").read_text())["psnr"]
    assert se > zf + 3.0


def test_refuses_to_overwrite(workspace, capsys) -> None:
    d = workspace
    out = d / "ph.nii.gz"
    before = out.read_bytes()
    assert _run("phantom", "--output", str(out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_unreadable_input_names_the_file(tmp_path, capsys) -> None:
    bad = tmp_path / "not_a_volume.nii.gz"
    bad.write_bytes(b"garbage")
    assert _run("simulate", "--task", "sparse-view-ct", "--input", str(bad), "--output", str(tmp_path / "m.h5")) == 2
    err = capsys.readouterr().err
    assert "not_a_volume.nii.gz" in err and "Traceback" not in err


def test_missing_measurement_and_wrong_method(workspace, tmp_path, capsys) -> None:
    assert _run("reconstruct", "--input", str(tmp_path / "missing.h5"), "--method", "fbp",
                "--output", str(tmp_path / "r.nii.gz")) == 2
    assert "missing.h5" in capsys.readouterr().err
    assert _run("reconstruct", "--input", str(workspace / "mr.h5"), "--method", "fbp",
                "--output", str(tmp_path / "r.nii.gz")) == 2
    assert "does not apply to task" in capsys.readouterr().err


def test_bad_setting_names_the_key(workspace, tmp_path, capsys) -> None:
    assert _run("reconstruct", "--input", str(workspace / "ct.h5"), "--method", "sirt", "--set", "iters=5",
                "--output", str(tmp_path / "r.nii.gz")) == 2
    assert "iters" in capsys.readouterr().err


def test_unknown_task_is_an_argparse_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "medrecon.cli", "simulate", "--task", "pet", "--input", "x",
                           "--output", "y"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'pet'" in proc.stderr


def test_every_command_has_help(capsys) -> None:
    from medrecon.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, cmd in sub.choices.items():
        for action in cmd._actions:
            if action.dest not in ("help",) and action.option_strings:
                assert action.help, f"medrecon {name} {action.option_strings[0]} has no help text"


def test_mri_units_round_trip_for_any_intensity_scale() -> None:
    """An MR volume in arbitrary units (max ~230) comes back in the same units from SENSE."""
    import numpy as np

    from medrecon.methods import run_method
    from medrecon.metrics import psnr
    from medrecon.phantoms import shepp_logan_3d
    from medrecon.tasks import MRIOptions, simulate, to_volume_units
    from medrecon.volume import Volume

    v = Volume.from_array(230.0 * shepp_logan_3d((2, 32, 32), contrast="mr"), modality="MR")
    m = simulate(v, "cs-mri", mri=MRIOptions(acceleration=2.0, coils=4, center_fraction=0.2))
    x = to_volume_units(run_method(m, "sense"), m)
    assert abs(float(np.percentile(x, 99)) / float(np.percentile(v.array, 99)) - 1) < 0.1
    assert psnr(x, v.array, 230.0) > 25.0


def test_simulate_takes_a_slab_at_the_prior_size(workspace, capsys) -> None:
    from medrecon.io import load_volume
    from medrecon.io.measurements import load_measurement

    d = workspace
    assert _run("simulate", "--task", "sparse-view-ct", "--input", str(d / "ph.nii.gz"), "--slices",
                "1:5", "--size", "32", "--output", str(d / "slab.h5")) == 0
    m = load_measurement(d / "slab.h5")
    full = load_volume(d / "ph.nii.gz")
    assert m.data.shape[0] == 4 and tuple(m.geometry["image_shape"]) == (32, 32)
    assert m.attrs["volume"]["spacing"][1] == pytest.approx(full.spacing[1] * 48 / 32)
    assert _run("simulate", "--task", "sparse-view-ct", "--input", str(d / "ph.nii.gz"), "--slices",
                "one:5", "--output", str(d / "bad.h5")) == 2
    assert "--slices 'one:5'" in capsys.readouterr().err and not (d / "bad.h5").exists()
    assert _run("simulate", "--task", "sparse-view-ct", "--input", str(d / "ph.nii.gz"), "--slices",
                "3:99", "--output", str(d / "bad.h5")) == 2
    assert "outside the volume's 6 slices" in capsys.readouterr().err


def test_reconstruct_writes_a_dicom_series_beside_the_measurement(workspace, tmp_path) -> None:
    """--dicom-out in a subfolder of the measurement's folder; never inside the source study."""
    from medrecon.io import load_volume, write_dicom_series

    d = workspace
    study = tmp_path / "study"
    write_dicom_series(load_volume(d / "ph.nii.gz"), study, method="source", task="none")
    meas = tmp_path / "work" / "m.h5"
    meas.parent.mkdir()
    assert _run("simulate", "--task", "sparse-view-ct", "--views", "30", "--input", str(study),
                "--output", str(meas)) == 0
    assert _run("--quiet", "reconstruct", "--input", str(meas), "--method", "fbp", "--output",
                str(meas.parent / "fbp.nii.gz"), "--dicom-out", str(meas.parent / "fbp_dicom")) == 0
    back = load_volume(meas.parent / "fbp_dicom")
    assert back.shape == load_volume(study).shape
    assert _run("--quiet", "reconstruct", "--input", str(meas), "--method", "fbp", "--output",
                str(meas.parent / "fbp2.nii.gz"), "--dicom-out", str(study / "derived")) == 2
    assert not (study / "derived").exists()


def test_quiet_is_accepted_before_and_after_the_command(workspace) -> None:
    from medrecon.cli import build_parser
    parser = build_parser()
    for argv in (["--quiet", "info", "x"], ["info", "x", "--quiet"], ["info", "--quiet", "x"]):
        assert parser.parse_args(argv).quiet is True, argv
    assert parser.parse_args(["info", "x"]).quiet is False
    assert parser.parse_args(["--verbose", "info", "x"]).verbose is True  # not reset by the sub-command
    assert _run("reconstruct", "--input", str(workspace / "ct.h5"), "--method", "sirt", "--set", "iterations=3",
                "--output", str(workspace / "quiet.nii.gz"), "--quiet") == 0


def test_option_help_states_its_default_once(capsys) -> None:
    from medrecon.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, cmd in sub.choices.items():
        text = cmd.format_help()
        for action in cmd._actions:
            if not action.option_strings or not action.help:
                continue
            rendered = cmd._get_formatter()._expand_help(action)
            assert rendered.lower().count("default") <= 1, (name, action.option_strings, rendered)
        assert "(default: None)" not in text, name
    simulate = sub.choices["simulate"]
    views = next(a for a in simulate._actions if "--views" in a.option_strings)
    assert simulate._get_formatter()._expand_help(views).endswith("(default: 8)")  # still stated once


def test_method_that_does_not_apply_lists_every_method_that_does(workspace, tmp_path, capsys) -> None:
    assert _run("reconstruct", "--input", str(workspace / "ct.h5"), "--method", "sense",
                "--output", str(tmp_path / "r.nii.gz")) == 2
    err = capsys.readouterr().err
    assert "choose from fbp, sirt, cgls, tv" in err and "dds" in err and "mbir" in err


def test_progress_is_log_lines_when_stderr_is_not_a_terminal(workspace, tmp_path) -> None:
    """A pipe is not a terminal: one line per update, no carriage returns (a tqdm bar otherwise)."""
    proc = subprocess.run([sys.executable, "-m", "medrecon.cli", "reconstruct", "--input", str(workspace / "ct.h5"),
                           "--method", "tv", "--set", "iterations=30", "--output", str(tmp_path / "tv.nii.gz")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tv: ADMM-TV")]   # method: stage
    assert lines and "30/30" in lines[-1] and all(len(line) < 120 for line in lines)
