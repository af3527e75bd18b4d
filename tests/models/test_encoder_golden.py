"""Golden: the torch image encoder loaded from tiny_focsam.pth reproduces upstream's encoder.npz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from focsam_onnx.models.checkpoint import load_checkpoint

TOL = 1e-4  # golden README §8


@pytest.fixture(scope="module")
def model(golden):
    model, _ = load_checkpoint(golden / "tiny_focsam.pth")
    return model


@pytest.fixture(scope="module")
def encoder_case(load_golden):
    return load_golden("encoder")


@pytest.fixture(scope="module")
def outputs(model, encoder_case) -> dict[str, np.ndarray]:
    """patch_embed and block0_out through the submodules, image_embeds through `encode`."""
    x = torch.from_numpy(encoder_case["input"])
    backbone = model.backbone
    with torch.no_grad():
        patch = backbone.patch_embed(x)
        block0 = backbone.blocks[0](patch + backbone.pos_embed)
        embeds = model.encode(x)
    return {"patch_embed": patch.numpy(), "block0_out": block0.numpy(),
            "image_embeds": embeds.numpy()}


@pytest.mark.parametrize("name", ["patch_embed", "block0_out", "image_embeds"])
def test_encoder_matches_upstream(outputs, encoder_case, name):
    ours, ref = outputs[name], encoder_case[name]
    assert ours.shape == ref.shape
    diff = float(np.abs(ours - ref).max())
    assert diff <= TOL, f"{name}: max abs diff {diff:.3g} > {TOL}"


def test_encoder_rejects_other_sizes(model):
    with pytest.raises(ValueError, match=r"\(1, 3, 512, 512\)"):
        model.encode(torch.zeros(1, 3, 512, 512))
