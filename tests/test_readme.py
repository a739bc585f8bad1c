"""The README's commands run as written after its two set-up commands."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def _commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_every_command_uses_the_virtualenv_programs() -> None:
    """After the set-up commands nothing is activated: `medrecon` and `python` are not on PATH."""
    text = README.read_text()
    for block in _blocks(text):
        for cmd in _commands(block):
            assert not re.match(r"(medrecon|python|torchrun|pytest) ", cmd), cmd
    for inline in re.findall(r"`([^`\n]+)`", text):
        if re.search(r"\b[A-Z]{3,}\b", inline):   # a usage template (MANIFEST, DIR), not a command
            continue
        assert not re.match(r"(python|torchrun) \S", inline), inline
        assert not re.match(r"medrecon (demo|phantom|simulate|reconstruct|evaluate|info|data|train|prior)\b.* --",
                            inline), inline


@pytest.mark.slow
def test_the_command_line_section_runs_as_written(tmp_path) -> None:
    section = README.read_text().split("## Command line", 1)[1]
    commands = _commands(_blocks(section)[0])
    assert len(commands) == 5
    bin_dir = Path(sys.executable).parent
    for cmd in commands:
        proc = subprocess.run(cmd.replace(".venv/bin/", f"{bin_dir}/"), shell=True, cwd=tmp_path,
                              capture_output=True, text=True)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    for name in ("phantom.nii.gz", "meas.h5", "tv.nii.gz", "tv.png", "tv.html", "tv.json", "tv.metrics.json"):
        assert (tmp_path / name).is_file(), name


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_python_example_runs(tmp_path) -> None:
    """The README's Python example, run as written: TV beats FBP, and the shipped priors are listed."""
    blocks = _python_blocks(README.read_text())
    assert len(blocks) == 1
    proc = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(README.parent)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    psnr = {ln.split()[0]: float(ln.split()[1]) for ln in lines[:2]}
    assert psnr["tv"] > psnr["fbp"] + 3.0, psnr
    assert "chest-ct" in lines[2] and "brain-mri" in lines[2]


def test_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (README.parent / link).is_file(), link
