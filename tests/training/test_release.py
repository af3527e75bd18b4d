"""release.py: a run becomes a float16 checkpoint in upstream's container that loads as the
tiny variant with its refiner, and prints the two catalogue values."""

from __future__ import annotations

import hashlib

import pytest
import torch

from focsam_onnx.models.checkpoint import load_checkpoint
from focsam_onnx.training.release import NOTE, main
from focsam_onnx.training.train import TrainConfig, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_a_run_released_is_a_float16_focsam_checkpoint(tmp_path, capsys):
    cfg = TrainConfig(steps=1, crop_steps=1, crop_tokens=16, objects_per_step=1,
                      max_extra_steps=1, checkpoint_every=1, val_every=100, val_scenes=0,
                      warmup_steps=1, threads=1)
    trained = train(cfg, tmp_path / "run").state_dict()
    out = tmp_path / "demo_tiny.pth"
    main(["--run", str(tmp_path / "run"), "--out", str(out)])
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert set(saved) == {"meta", "state_dict"} and saved["meta"]["note"] == NOTE
    assert saved["meta"]["seed"] == cfg.seed and saved["meta"]["iter"] == 1
    assert all(v.dtype == torch.float16 for v in saved["state_dict"].values())
    assert saved["state_dict"].keys() == trained.keys()
    for name, value in trained.items():
        torch.testing.assert_close(saved["state_dict"][name], value.to(torch.float16))
    _, info = load_checkpoint(out)
    assert info.config.variant == "tiny" and info.config.refiner is not None
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == [f"DEMO_TINY_SIZE = {out.stat().st_size:_}",
                            f'DEMO_TINY_SHA256 = "{digest}"']
