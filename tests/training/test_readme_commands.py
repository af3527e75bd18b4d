"""The README's Demo model commands (train, release, held-out scenes) run as written, shrunk by
flags appended to each (argparse keeps the last value), in a scratch folder."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from focsam_onnx.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
# Appended to each command: one full-canvas step, and the release written here, not into the
# package's weights/ (the README's release command writes the shipped file).
SHRINK = {
    "focsam_onnx.training.train": ["--steps", "1", "--crop-steps", "0", "--objects-per-step",
                                   "1", "--val-scenes", "1", "--threads", "1"],
    "focsam_onnx.training.release": ["--out", "demo.pth"],
    "focsam_onnx.training.heldout": ["--scenes", "1"],
}


def demo_model_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text().split("## Demo model\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_the_readme_demo_model_commands_run(tmp_path):
    commands = demo_model_commands()
    assert [c[:3] for c in commands] == [[".venv/bin/python", "-m", module] for module in SHRINK]
    for command in commands:
        argv = [sys.executable, *command[1:], *SHRINK[command[2]]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "runs" / "demo" / "final.pt").is_file()
    _, info = load_checkpoint(tmp_path / "demo.pth")
    assert info.config.variant == "tiny" and info.config.refiner is not None
    state = torch.load(tmp_path / "demo.pth", map_location="cpu", weights_only=True)
    assert {v.dtype for v in state["state_dict"].values()} == {torch.float16}
    assert any((tmp_path / "heldout" / "compact" / "images").iterdir())
