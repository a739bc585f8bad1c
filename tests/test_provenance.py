"""Every JSON medrecon writes carries the provenance block, and the block says what made it."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medrecon
from medrecon.cli import main
from medrecon.provenance import input_checksum, prior_identity, provenance, sha256_file

KEYS = {"medrecon_version", "git_revision", "git_dirty", "torch_version", "python_version", "device", "seed",
        "inputs", "prior", "command", "date"}
REPO = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check(block: dict, command: str, inputs=(), prior=None, seed=None, device=None) -> None:
    assert set(block) >= KEYS, KEYS - set(block)
    assert block["medrecon_version"] == medrecon.__version__ and block["torch_version"] == torch.__version__
    assert block["command"].startswith(command), (block["command"], command)
    assert block["date"].endswith("+00:00") and block["seed"] == seed
    if device is not None:
        assert block["device"] == device
    hashes = {Path(i["path"]).name: i["sha256"] for i in block["inputs"]}
    for path in inputs:
        assert hashes[Path(path).name] == (_sha(path) if Path(path).is_file() else input_checksum(path)["sha256"])
    if prior is None:
        assert block["prior"] is None
    else:
        ident = block["prior"]
        assert ident["name"] == prior and ident["weights_sha256"] == _sha(Path(ident["path"]) / ident["weights"])


def test_checksums_of_files_folders_and_priors(tmp_path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.dcm").write_bytes(b"one")
    (tmp_path / "s" / "b.dcm").write_bytes(b"two")
    assert sha256_file(tmp_path / "s" / "a.dcm") == hashlib.sha256(b"one").hexdigest()
    folder = input_checksum(tmp_path / "s")
    assert folder["files"] == 2
    (tmp_path / "s" / "b.dcm").write_bytes(b"tw0")          # one byte changed in one file
    assert input_checksum(tmp_path / "s")["sha256"] != folder["sha256"]
    ident = prior_identity("phantom")
    assert ident["weights_sha256"] == _sha(Path(ident["path"]) / "ema.safetensors")
    block = provenance(device="cpu", seed=3, inputs=[tmp_path / "s" / "a.dcm"], prior="phantom", command="x y")
    _check(block, "x y", [tmp_path / "s" / "a.dcm"], prior="phantom", seed=3, device="cpu")
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert block["git_revision"] == (rev or None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A small run of every command that writes JSON, all into one folder."""
    d = tmp_path_factory.mktemp("prov")
    ph = d / "ph.nii.gz"
    assert main(["phantom", "--shape", "2", "128", "128", "--output", str(ph)]) == 0
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "8", "--seed", "5", "--input", str(ph),
                 "--output", str(d / "m.h5")]) == 0
    assert main(["--quiet", "reconstruct", "--input", str(d / "m.h5"), "--method", "fbp",
                 "--output", str(d / "fbp.nii.gz"), "--report", str(d / "fbp.html")]) == 0
    assert main(["reconstruct", "--input", str(d / "m.h5"), "--method", "dds", "--prior", "phantom", "--seed",
                 "7", "--set", "steps=2", "--output", str(d / "dds.nii.gz"), "--quiet"]) == 0
    assert main(["evaluate", "--reference", str(ph), "--recon", str(d / "fbp.nii.gz"),
                 "--json", str(d / "eval.json")]) == 0
    assert main(["--quiet", "demo", "--data", "phantom", "--no-diffusion", "--shape", "4", "32", "32", "--output",
                 str(d / "demo")]) == 0
    assert main(["prior-eval", "phantom", "--data", "phantoms", "--slices", "2", "--sigmas", "0.1",
                 "--samples", "0", "--output", str(d / "eval-prior"), "--device", "cpu"]) == 0
    from published_fixtures import DATA, tiny_config
    cfg = d / "ncsnpp.json"
    cfg.write_text(json.dumps(tiny_config("ncsnpp")))
    assert main(["--quiet", "prior", "import", "--format", "ncsnpp", str(DATA / "ncsnpp_tiny_checkpoint.pth"),
                 "--config", str(cfg), "--output", str(d / "imported")]) == 0
    study = subprocess.run([sys.executable, str(REPO / "scripts" / "reconstruct_study.py"), str(ph), "--output",
                            str(d / "study"), "--methods", "fbp", "--size", "32", "--device", "cpu"],
                           capture_output=True, text=True)
    assert study.returncode == 0, study.stderr
    return d


def test_every_json_written_carries_the_provenance_block(runs) -> None:
    written = sorted(p for p in runs.rglob("*.json") if p.name != "ncsnpp.json")  # that one is an input
    names = {p.relative_to(runs).as_posix() for p in written}
    assert names >= {"fbp.config.json", "fbp.metrics.json", "dds.config.json", "dds.metrics.json", "eval.json",
                     "demo/metrics.json", "eval-prior/prior_eval.json", "imported/model_card.json",
                     "study/metrics.json"}, names
    for path in written:
        block = json.loads(path.read_text())["provenance"]
        assert set(block) >= KEYS, (path, KEYS - set(block))


def test_the_blocks_name_what_made_each_result(runs) -> None:
    d = runs
    load = lambda name: json.loads((d / name).read_text())  # noqa: E731
    _check(load("fbp.config.json")["provenance"], "medrecon --quiet reconstruct --input", [d / "m.h5"], device="cpu")
    dds = load("dds.metrics.json")
    _check(dds["provenance"], "medrecon reconstruct --input", [d / "m.h5"], prior="phantom", seed=7, device="cpu")
    simulated = dds["provenance"]["measurement"]     # how the measurement itself was made
    _check(simulated, "medrecon simulate --task sparse-view-ct", [d / "ph.nii.gz"], seed=5, device="cpu")
    assert dds["convention"]["kind"] == "ct-window"
    _check(load("eval.json")["provenance"], "medrecon evaluate", [d / "ph.nii.gz", d / "fbp.nii.gz"])
    _check(load("demo/metrics.json")["provenance"], "medrecon --quiet demo", seed=0)
    _check(load("eval-prior/prior_eval.json")["provenance"], "medrecon prior-eval phantom", prior="phantom",
           seed=0, device="cpu")
    _check(load("imported/model_card.json")["provenance"], "medrecon --quiet prior import",
           [d / "ncsnpp.json"])
    _check(load("study/metrics.json")["provenance"], "python scripts/reconstruct_study.py", [d / "ph.nii.gz"],
           seed=0, device="cpu")


def test_the_html_report_holds_figure_table_settings_and_provenance(runs) -> None:
    text = (runs / "fbp.html").read_text()
    assert "data:image/png;base64," in text and "<h2>Metrics</h2>" in text
    for piece in ("axial PSNR / SSIM", "<td>fbp</td>", "filter", "git_revision", "HU window [-1000, 1000]"):
        assert piece in text, piece
    assert "<td>tv</td>" not in text        # nothing reconstructed behind the user's back (issue 22)


def test_info_json_and_version(runs, capsys) -> None:
    assert main(["info", str(runs / "m.h5"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    _check(report["provenance"], "medrecon info", [runs / "m.h5"])
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"medrecon {medrecon.__version__} (") and f"torch {torch.__version__}" in out
