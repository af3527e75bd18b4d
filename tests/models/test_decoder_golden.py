"""Golden: prompt encoder + mask decoder (and the refine glue) against upstream decoder_*.npz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from focsam_onnx.engine.roi import roi_from_logits
from focsam_onnx.export.parity import max_abs_diff
from focsam_onnx.models.checkpoint import load_checkpoint

CASES = ["decoder_1click", "decoder_3clicks", "decoder_6clicks"]
# golden README §8 suggested tolerances
TOL = {"sparse_embeds": 1e-5, "masks_all": 1e-5, "iou_pred": 1e-5, "mask_token": 1e-4,
       "mask_tokens_all": 1e-4}
REFINED_TOL = 5e-4


@pytest.fixture(scope="module")
def model(golden):
    model, _ = load_checkpoint(golden / "tiny_focsam.pth")
    return model


@pytest.fixture(scope="module")
def embeddings(load_golden) -> torch.Tensor:
    return torch.from_numpy(load_golden("encoder")["image_embeds"])


def _inputs(case: dict[str, np.ndarray]):
    prev = case.get("prev_logits")
    return (torch.from_numpy(case["coords"]), torch.from_numpy(case["labels"]),
            None if prev is None else torch.from_numpy(prev))


def _run(model, embeddings, case) -> dict[str, np.ndarray]:
    coords, labels, prev = _inputs(case)
    with torch.no_grad():
        sparse, _ = model.prompt(coords, labels, prev)
        masks, iou, tokens = model.decode_all(embeddings, coords, labels, prev)
        low_res, token, iou_single = model.decode(embeddings, coords, labels, prev)
    return {"sparse_embeds": sparse.numpy(), "masks_all": masks.numpy(), "iou_pred": iou.numpy(),
            "mask_tokens_all": tokens.numpy(), "mask_token": token.numpy(),
            "single_mask": low_res.numpy(), "single_iou": iou_single.numpy()}


@pytest.mark.parametrize("name", CASES)
def test_decoder_matches_upstream(model, embeddings, load_golden, name):
    case = load_golden(name)
    ours = _run(model, embeddings, case)
    diffs = {key: max_abs_diff(ours[key], case[key]) for key in TOL}
    # The fast single-mask path must agree with upstream's 'single mask' = masks_all[:, :1].
    diffs["single_mask"] = max_abs_diff(ours["single_mask"], case["masks_all"][:, :1])
    diffs["single_iou"] = max_abs_diff(ours["single_iou"], case["iou_pred"])
    tol = {**TOL, "single_mask": TOL["masks_all"], "single_iou": TOL["iou_pred"]}
    bad = {k: d for k, d in diffs.items() if d > tol[k]}
    assert not bad, f"{name}: max abs diffs over tolerance: {bad} (all: {diffs})"


def test_mask_prompt_blend_is_exact(model):
    """has_mask_input 0 -> no_mask_embed exactly; 1 -> mask_downscaling exactly (no leakage)."""
    neck = model.neck
    logits = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        off = neck.embed_mask(logits, torch.zeros(1))
        on = neck.embed_mask(logits, torch.ones(1))
        torch.testing.assert_close(off, neck.no_mask_dense(), rtol=0, atol=0)
        torch.testing.assert_close(on, neck.mask_downscaling(logits), rtol=0, atol=0)


def test_padding_point_is_not_a_point_embed(model):
    """Wherever the padding point lies, its token is not_a_point_embed and nothing else."""
    coords = torch.tensor([[[10.0, 20.0], [512.0, 3.0]]])
    labels = torch.tensor([[1.0, -1.0]])
    with torch.no_grad():
        sparse = model.neck.embed_points(coords, labels)
    torch.testing.assert_close(sparse[0, 1], model.neck.not_a_point_embed.weight[0], rtol=0, atol=0)


def test_decode_validates_points(model, embeddings):
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        model.decode(embeddings, torch.zeros(1, 2, 2), torch.zeros(1, 3))


def test_refine_from_decoder_token(model, embeddings, load_golden):
    """decode (1 click) -> mask token -> FocSAM.refine reproduces upstream refiner_middle."""
    case = load_golden("refiner_middle")
    coords, labels, _ = _inputs(load_golden("decoder_1click"))
    with torch.no_grad():
        _, token, _ = model.decode(embeddings, coords, labels)
        assert max_abs_diff(token.numpy(), case["mask_token"]) <= TOL["mask_token"]
        roi = roi_from_logits(case["coarse_logits"], model.cfg.refiner.expand_ratio)
        refined = model.refine(embeddings, torch.from_numpy(case["mask_token"]),
                               torch.from_numpy(roi.token_mask)).numpy()
    expected = case["embed_proj_out"].copy()
    expected[0][:, case["changed_mask64"]] = case["refined_values"]
    diff = max_abs_diff(refined, expected)
    assert diff <= REFINED_TOL, f"refined embeddings: max abs diff {diff:.3g}"
