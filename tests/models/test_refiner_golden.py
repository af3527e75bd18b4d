"""Tests for models/refiner.py: upstream parameter names, and the tiny refiner against golden.

Golden tolerances are the golden README's (section 8): embed_proj / cls 1e-4, refined map 5e-4;
window indices exact; tokens outside the changed windows bitwise equal to embed_proj(E0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from focsam_onnx.config import RefinerConfig, get_variant
from focsam_onnx.models.refiner import FocusRefiner

CASES = ["middle", "border", "tiny", "allneg"]
PREFIX = "refine_head."


@pytest.fixture(scope="module")
def tiny_refiner(golden: Path) -> FocusRefiner:
    state = torch.load(golden / "tiny_focsam.pth", weights_only=True)["state_dict"]
    state = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    model = FocusRefiner(get_variant("tiny").refiner).eval()
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def image_embeds(load_golden) -> torch.Tensor:
    return torch.from_numpy(load_golden("encoder")["image_embeds"])


@pytest.fixture(scope="module")
def embed_proj_out(load_golden) -> np.ndarray:
    return load_golden("refiner_middle")["embed_proj_out"]


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def test_state_dict_matches_upstream_vit_h_manifest(golden: Path) -> None:
    rows = (golden.parent / "spec" / "focsam_vit_h_state_dict.tsv").read_text().splitlines()
    expected = [(key[len(PREFIX):], tuple(json.loads(shape)))
                for key, shape, _ in (row.split("\t") for row in rows[1:])
                if key.startswith(PREFIX)]
    with torch.device("meta"):
        model = FocusRefiner(RefinerConfig(depth=12))
    got = [(key, tuple(t.shape)) for key, t in model.state_dict().items()]
    assert len(expected) == 662
    assert got == expected  # same keys, shapes and registration order


def test_embed_proj_matches_golden(tiny_refiner: FocusRefiner, image_embeds: torch.Tensor,
                                   embed_proj_out: np.ndarray) -> None:
    with torch.no_grad():
        got = tiny_refiner.embed_proj(image_embeds).numpy()
    assert _max_abs(got, embed_proj_out) <= 1e-4


@pytest.mark.parametrize("case", CASES)
def test_refiner_matches_golden(case: str, tiny_refiner: FocusRefiner, image_embeds: torch.Tensor,
                                embed_proj_out: np.ndarray, load_golden) -> None:
    ref = load_golden(f"refiner_{case}")
    mask_token = torch.from_numpy(ref["mask_token"])
    roi_mask = torch.from_numpy(ref["roi_mask64"])[None, None]
    with torch.no_grad():
        cls_in = tiny_refiner.token_proj(mask_token).numpy()
        out, trace = tiny_refiner.forward_with_trace(image_embeds, mask_token, roi_mask)
    assert _max_abs(cls_in, ref["cls_in"]) <= 1e-4

    assert len(trace) == 2
    for b, block in enumerate(trace):
        np.testing.assert_array_equal(block.windows.numpy(), ref[f"block{b}_windows"])
        assert _max_abs(block.cls.numpy(), ref[f"block{b}_cls"]) <= 1e-4, f"block {b} cls"

    changed = ref["changed_mask64"]
    expected = embed_proj_out.copy()
    expected[0][:, changed] = ref["refined_values"]
    out = out.numpy()
    assert _max_abs(out, expected) <= 5e-4
    # Unselected windows keep embed_proj(E0) bit for bit (the scatter leaves them untouched).
    with torch.no_grad():
        projected = tiny_refiner.embed_proj(image_embeds).numpy()
    np.testing.assert_array_equal(out[0][:, ~changed], projected[0][:, ~changed])


def test_empty_roi_returns_embed_proj(tiny_refiner: FocusRefiner, image_embeds: torch.Tensor,
                                      load_golden) -> None:
    mask_token = torch.from_numpy(load_golden("refiner_middle")["mask_token"])
    with torch.no_grad():
        out, trace = tiny_refiner.forward_with_trace(image_embeds, mask_token,
                                                     torch.zeros(1, 1, 64, 64))
        projected = tiny_refiner.embed_proj(image_embeds)
        cls_in = tiny_refiner.token_proj(mask_token)
    assert [len(t.windows) for t in trace] == [0, 0]
    torch.testing.assert_close(out, projected, rtol=0, atol=0)
    # The mean of 16 unchanged tokens is cls up to rounding; rho = 0 is clipped to 0.01, so the
    # rescale multiplies that rounding by about 100: hence the golden cls tolerance, not 1e-6.
    torch.testing.assert_close(trace[-1].cls, cls_in, rtol=0, atol=1e-4)


def test_cls_rescale_at_init_is_mean_over_selected_windows() -> None:
    # With cls_scale_proj at its init (a = 1, b = 0), s = nW / k, so s * (mean_all - cls) + cls
    # is the mean over the k selected windows only (FOCSAM.md section 5.3 step 7).
    torch.manual_seed(0)
    model = FocusRefiner(RefinerConfig(depth=2)).eval()
    block = model.blocks[0]
    x = torch.randn(1, 256, 64, 64)
    cls = torch.randn(1, 1, 256)
    roi = torch.zeros(1, 1, 64, 64)
    roi[..., 20:40, 3:5] = 1.0  # windows 4 and 8
    with torch.no_grad():
        _, cls_out, windows = block(x, cls, roi)
        windows_in = x.view(1, 256, 4, 16, 4, 16).permute(0, 2, 4, 1, 3, 5).reshape(16, 256, 16, 16)
        picked = windows_in[[4, 8]]
        per_window = block.img2cls(cls.expand(2, 1, 256), picked.flatten(2).transpose(1, 2))
    assert windows.tolist() == [4, 8]
    torch.testing.assert_close(cls_out, per_window.mean(dim=0, keepdim=True), rtol=0, atol=1e-5)


def test_shifted_block_selects_from_rolled_mask_and_leaves_the_rest_untouched() -> None:
    torch.manual_seed(1)
    model = FocusRefiner(RefinerConfig(depth=2)).eval()
    block = model.blocks[1]
    x = torch.randn(1, 256, 64, 64)
    cls = torch.randn(1, 1, 256)
    roi = torch.zeros(1, 1, 64, 64)
    roi[..., 60:62, 42:44] = 1.0  # rolled by -8: rows 52..53, cols 34..35 -> shifted window 14
    with torch.no_grad():
        out, _, windows = block(x, cls, roi)
        # Shifted window 14 = rows 56..63 then 0..7 (wrapped, no mask), columns 40..55.
        rows = torch.cat([torch.arange(56, 64), torch.arange(0, 8)])
        cols = torch.arange(40, 56)
        window = x[:, :, rows.unsqueeze(1), cols]  # (1, 256, 16, 16)
        cls_w = block.img2cls(cls, window.flatten(2).transpose(1, 2))
        expected = block.cls2img(window, cls_w)
    assert windows.tolist() == [14]
    torch.testing.assert_close(out[:, :, rows.unsqueeze(1), cols], expected, rtol=0, atol=1e-5)
    changed = torch.zeros(64, 64, dtype=torch.bool)
    changed[rows.unsqueeze(1), cols] = True
    assert torch.equal(out[..., ~changed], x[..., ~changed])


def test_bad_roi_shape_raises() -> None:
    with torch.device("meta"):
        model = FocusRefiner(RefinerConfig(depth=2))
    with pytest.raises(ValueError, match="roi_mask must be"):
        model(torch.zeros(1, 256, 64, 64, device="meta"), torch.zeros(1, 1, 256, device="meta"),
              torch.zeros(1, 64, 64, device="meta"))
