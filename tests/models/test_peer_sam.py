"""Parity with the official `segment-anything` package on random weights.

Their model is built by their own builder (`sam_model_registry["vit_b"]()`, or the same builder
with the tiny golden backbone sizes), perturbed so that zero-initialised tensors (pos_embed,
rel_pos tables, biases) matter, saved as an official `.pth`, and loaded by our `load_checkpoint`
as plain SAM. Both then see the same preprocessed input and clicks.

The ViT-B case (the acceptance case: 12 heads, global blocks 2/5/8/11) costs about 25 s of CPU
on a 2-core machine (two ViT-B encoder passes); the tiny case runs in seconds.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from focsam_onnx.config import get_variant
from focsam_onnx.export.parity import max_abs_diff
from focsam_onnx.models.checkpoint import load_checkpoint
from focsam_onnx.models.segment_anything_compat import import_segment_anything

pytestmark = pytest.mark.parity

TOL = 1e-4
COORDS = [[300.0, 200.0], [612.5, 80.0], [150.0, 700.0]]  # (x, y) in the 1024 frame
LABELS = [1.0, 0.0, 1.0]


def _perturb(module: torch.nn.Module, generator: torch.Generator) -> None:
    """p += N(0, 1) * 0.02 * rms(p), or * 0.05 for an all-zero p (the golden weights recipe)."""
    with torch.no_grad():
        for p in module.parameters():
            rms = p.pow(2).mean().sqrt().item()
            std = 0.02 * rms if rms > 0 else 0.05
            p.add_(torch.randn(p.shape, generator=generator) * std)


def _their_sam(variant: str) -> torch.nn.Module:
    sam_module = import_segment_anything()
    if variant == "vit_b":
        return sam_module.sam_model_registry["vit_b"]()
    enc = get_variant(variant).encoder
    # The registry's own builder, at the golden fixture's backbone sizes. (The package
    # attribute `build_sam` is a function that shadows the submodule of the same name.)
    builder = importlib.import_module("segment_anything.build_sam")
    return builder._build_sam(
        encoder_embed_dim=enc.embed_dim, encoder_depth=enc.depth,
        encoder_num_heads=enc.num_heads,
        encoder_global_attn_indexes=list(enc.global_attn_indexes))


@pytest.fixture(scope="module", params=["tiny", "vit_b"])
def peers(request, tmp_path_factory):
    """(their Sam, our FocSAM, CheckpointInfo) with identical random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sam = _their_sam(request.param)
    _perturb(sam, torch.Generator().manual_seed(1))
    sam.eval()
    path = tmp_path_factory.mktemp("peer") / f"sam_{request.param}_random.pth"
    torch.save(sam.state_dict(), path)
    ours, info = load_checkpoint(path)
    return sam, ours, info


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def embeddings(peers, image) -> tuple[torch.Tensor, torch.Tensor]:
    """(theirs, ours): the vit_b encoder runs once per side for the whole module."""
    sam, ours, _ = peers
    with torch.no_grad():
        return sam.image_encoder(image), ours.encode(image)


def test_official_file_detected_as_plain_sam(peers):
    sam, ours, info = peers
    assert info.kind == "official_sam"
    variant = info.config.variant
    assert info.config == get_variant(variant).as_plain_sam()
    assert variant == ("vit_b" if len(sam.image_encoder.blocks) == 12 else "tiny")
    assert info.num_tensors == len(sam.state_dict())
    assert ours.backbone.blocks[0].norm1.eps == 1e-6


def test_image_embeddings_match(embeddings):
    theirs, ours = embeddings
    diff = max_abs_diff(ours, theirs)
    assert diff <= TOL, f"embeddings max abs diff {diff:.3g}"


def _their_decode(sam, embeddings, coords, labels, prev, box=None):
    points = (coords, labels) if coords.shape[1] else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=box, masks=prev)
    masks, iou = sam.mask_decoder(
        image_embeddings=embeddings, image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=False)
    return sparse, masks, iou


@pytest.mark.parametrize("num_clicks", [1, 3])
def test_low_res_mask_matches_with_and_without_prev_mask(peers, embeddings, num_clicks):
    """Click 1 without a mask prompt, then the same clicks with click 1's logits as prev."""
    sam, ours, _ = peers
    theirs_e, ours_e = embeddings
    coords = torch.tensor([COORDS[:num_clicks]])
    labels = torch.tensor([LABELS[:num_clicks]])
    with torch.no_grad():
        prev = None
        for _ in range(2):
            t_sparse, t_mask, t_iou = _their_decode(sam, theirs_e, coords, labels, prev)
            o_sparse, _ = ours.prompt(coords, labels, prev)
            o_mask, _, o_iou = ours.decode(ours_e, coords, labels, prev)
            diffs = {"sparse": max_abs_diff(o_sparse, t_sparse),
                     "mask0": max_abs_diff(o_mask, t_mask),
                     "iou0": max_abs_diff(o_iou[:, :1], t_iou)}
            assert max(diffs.values()) <= TOL, f"prev={prev is not None}: {diffs}"
            assert float(t_mask.abs().max()) > 1e-2  # a non-trivial prediction was compared
            prev = t_mask


BOX = [[120.0, 90.5, 700.0, 610.0]]  # (x0, y0, x1, y1) in the 1024 frame


@pytest.mark.parametrize("num_clicks", [0, 2])
def test_box_prompt_matches(peers, embeddings, num_clicks):
    """A box alone, and clicks + box: segment-anything embeds the corners with labels 2 / 3
    and sends no padding point; then the same prompt again with the first mask as prev."""
    sam, ours, _ = peers
    theirs_e, ours_e = embeddings
    coords = torch.tensor([COORDS[:num_clicks]]).reshape(1, num_clicks, 2)
    labels = torch.tensor([LABELS[:num_clicks]]).reshape(1, num_clicks)
    box = torch.tensor(BOX)
    with torch.no_grad():
        prev = None
        for _ in range(2):
            t_sparse, t_mask, t_iou = _their_decode(sam, theirs_e, coords, labels, prev, box)
            o_sparse, _ = ours.prompt(coords, labels, prev, box)
            o_mask, _, o_iou = ours.decode(ours_e, coords, labels, prev, box)
            assert o_sparse.shape[1] == num_clicks + 2  # corners, no padding point
            diffs = {"sparse": max_abs_diff(o_sparse, t_sparse),
                     "mask0": max_abs_diff(o_mask, t_mask),
                     "iou0": max_abs_diff(o_iou[:, :1], t_iou)}
            assert max(diffs.values()) <= TOL, f"prev={prev is not None}: {diffs}"
            assert float(t_mask.abs().max()) > 1e-2
            prev = t_mask
