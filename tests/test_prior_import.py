"""`medrecon prior import`: published checkpoints -> medrecon prior directories, and the refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrecon.cli import main
from medrecon.errors import DataError, UserError
from medrecon.published import build_denoiser, import_published
from published_fixtures import DATA, TOL, tiny_config, tiny_io


def config_file(tmp_path: Path, fmt: str, **extra) -> Path:
    path = tmp_path / f"{fmt}_config.json"
    path.write_text(json.dumps({**tiny_config(fmt), **extra}))
    return path


def cli_import(fmt: str, src: Path, cfg: Path, out: Path, *more: str) -> int:
    return main(["--quiet", "prior", "import", "--format", fmt, str(src), "--config", str(cfg),
                 "--output", str(out), *more])


def test_fixture_checksums() -> None:
    sums = dict(reversed(line.split("  ", 1)) for line in (DATA / "SHA256SUMS").read_text().splitlines())
    present = [p for p in DATA.iterdir() if p.name in sums]
    assert len(present) == 11
    for p in present:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == sums[p.name], p.name


def test_import_ncsnpp_via_cli(tmp_path: Path) -> None:
    out = tmp_path / "prior_ncsnpp"
    assert cli_import("ncsnpp", DATA / "ncsnpp_tiny_checkpoint.pth",
                      config_file(tmp_path, "ncsnpp", name="tiny"), out) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["format"] == "medrecon-prior/1" and card["name"] == "tiny"
    assert card["architecture"]["family"] == "ncsnpp" and card["parameterisation"] == "ve-score"
    assert card["intensity"]["convention"] == "window01" and card["image_size"] == 32
    assert card["noise"]["sigma_min"] == 0.01 and card["noise"]["sigma_max"] == 378.0
    assert card["weights"] == {"ema": "ema.safetensors", "raw": "raw.safetensors"}
    assert card["parameters"] == 116_681 and card["training"]["steps"] == 0
    # EMA applied: the written inference weights are exactly the published inference weights
    ema, ref = load_file(out / "ema.safetensors"), load_file(DATA / "ncsnpp_tiny.safetensors")
    assert sorted(ema) == sorted(ref)
    assert all(torch.equal(ema[k], ref[k]) for k in ref)
    raw = load_file(out / "raw.safetensors")
    assert not torch.equal(raw["all_modules.3.weight"], ema["all_modules.3.weight"])
    den, d = build_denoiser(card, ema, "cpu"), tiny_io("ncsnpp")
    with torch.no_grad():
        assert (den.score(d["x"], d["sigma"]) - d["out"]).abs().max().item() < TOL
    assert den.card is card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp leftovers


def test_import_adm_via_cli(tmp_path: Path) -> None:
    out = tmp_path / "prior_adm"
    assert cli_import("adm", DATA / "adm_tiny.pt", config_file(tmp_path, "adm"), out) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["architecture"]["family"] == "adm" and card["parameterisation"] == "vp-eps"
    assert card["intensity"]["convention"] == "raw" and card["weights"]["raw"] is None
    assert not (out / "raw.safetensors").exists()
    n = card["noise"]
    assert (n["beta_start"], n["beta_end"], n["timesteps"], n["learned_sigma"]) == (1e-4, 0.02, 1000, True)
    assert card["parameters"] == 353_090
    ema, ref = load_file(out / "ema.safetensors"), load_file(DATA / "adm_tiny.safetensors")
    assert sorted(ema) == sorted(ref) and all(torch.equal(ema[k], ref[k]) for k in ref)
    den, d = build_denoiser(card, ema, "cpu"), tiny_io("adm")
    with torch.no_grad():
        eps = den.eps_at_timestep(d["x"], d["t_frac"])
    assert (eps - d["out_t_frac"][:, :1]).abs().max().item() < TOL


class Payload:
    """A custom class: loading it would need unpickling code, which weights_only=True refuses."""


def _saved(tmp_path: Path, obj, name: str = "bad.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _ckpt() -> dict:
    return torch.load(DATA / "ncsnpp_tiny_checkpoint.pth", weights_only=True, map_location="cpu")


def test_refuses_checkpoint_without_ema(tmp_path: Path, capsys) -> None:
    ckpt = _ckpt()
    del ckpt["ema"]
    src = _saved(tmp_path, ckpt)
    rc = cli_import("ncsnpp", src, config_file(tmp_path, "ncsnpp"), tmp_path / "out")
    assert rc == 2
    err = capsys.readouterr().err
    assert "no 'ema' entry" in err and "bad.pth" in err
    assert not (tmp_path / "out").exists()


def test_refuses_wrong_shadow_list(tmp_path: Path) -> None:
    ckpt = _ckpt()
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    with pytest.raises(DataError, match="shadow_params has 275 entries, expected 276"):
        import_published("ncsnpp", _saved(tmp_path, ckpt), tmp_path / "o", config=tiny_config("ncsnpp"))
    ckpt = _ckpt()
    ckpt["ema"]["shadow_params"][5] = torch.zeros(3)
    with pytest.raises(DataError, match=r"shadow_params\[5\] has shape \[3\]"):
        import_published("ncsnpp", _saved(tmp_path, ckpt), tmp_path / "o", config=tiny_config("ncsnpp"))


def test_refuses_wrong_key_set_and_shapes(tmp_path: Path) -> None:
    ckpt = _ckpt()
    del ckpt["model"]["module.all_modules.8.NIN_0.W"]
    with pytest.raises(DataError, match=r"missing 1 tensor\(s\): all_modules.8.NIN_0.W"):
        import_published("ncsnpp", _saved(tmp_path, ckpt), tmp_path / "o", config=tiny_config("ncsnpp"))
    state = torch.load(DATA / "adm_tiny.pt", weights_only=True)
    state["out.2.weight"] = torch.zeros(2, 32, 1, 1)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(DataError) as info:
        import_published("adm", _saved(tmp_path, state, "bad.pt"), tmp_path / "o", config=tiny_config("adm"))
    msg = str(info.value)
    assert "unexpected 1 tensor(s): extra.weight" in msg and "out.2.weight [2, 32, 1, 1]" in msg
    # the right file with a config of another size
    with pytest.raises(DataError, match="shape mismatch"):
        import_published("adm", DATA / "adm_tiny.pt", tmp_path / "o",
                         config={**tiny_config("adm"), "num_channels": 64})


def test_refuses_the_other_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no 'model' entry"):
        import_published("ncsnpp", DATA / "adm_tiny.pt", tmp_path / "o", config=tiny_config("ncsnpp"))
    with pytest.raises(DataError, match="expected a plain ADM state dict"):
        import_published("adm", DATA / "ncsnpp_tiny_checkpoint.pth", tmp_path / "o", config=tiny_config("adm"))


def test_refuses_pickled_code_and_garbage(tmp_path: Path) -> None:
    src = _saved(tmp_path, {"w": torch.zeros(1), "obj": Payload()})   # needs code to unpickle
    with pytest.raises(DataError, match="weights_only=True"):
        import_published("adm", src, tmp_path / "o", config=tiny_config("adm"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt"):
        import_published("adm", junk, tmp_path / "o", config=tiny_config("adm"))
    with pytest.raises(UserError, match="file not found"):
        import_published("adm", tmp_path / "missing.pt", tmp_path / "o", config=tiny_config("adm"))


def test_output_exists_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "p"
    cfg = config_file(tmp_path, "adm")
    assert cli_import("adm", DATA / "adm_tiny.pt", cfg, out) == 0
    (out / "marker").write_text("old")
    assert cli_import("adm", DATA / "adm_tiny.pt", cfg, out) == 2
    assert (out / "marker").exists()
    assert cli_import("adm", DATA / "adm_tiny.pt", cfg, out, "--overwrite") == 0
    assert not (out / "marker").exists() and (out / "ema.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adm_config.json", "p"]


def test_default_config_is_the_full_size_network(tmp_path: Path) -> None:
    # no config: the published AAPM-256 configuration, which the tiny fixture does not fit
    with pytest.raises(DataError, match=r"adm_tiny.pt: weights do not match .*missing"):
        import_published("adm", DATA / "adm_tiny.pt", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_build_denoiser_refuses_bad_cards(tmp_path: Path) -> None:
    out = import_published("adm", DATA / "adm_tiny.pt", tmp_path / "p", config=tiny_config("adm"))
    card = json.loads((out / "model_card.json").read_text())
    state = load_file(out / "ema.safetensors")
    with pytest.raises(DataError, match="parameterisation"):
        build_denoiser({**card, "parameterisation": "ve-score"}, state, "cpu")
    del state["middle_block.1.qkv.weight"]
    with pytest.raises(DataError, match="middle_block.1.qkv.weight"):
        build_denoiser(card, state, "cpu")
