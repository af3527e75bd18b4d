"""The decoder's exact rewrites compute what the modules in models/ compute, up to rounding."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch
from torch import nn

from focsam_onnx.config import FOLD_MAX_TOKENS
from focsam_onnx.export.decoder_rewrites import ImageCrossAttention, rewrite_decoder
from focsam_onnx.models.mask_decoder import MaskDecoder
from focsam_onnx.models.transformer import Attention


def _random_(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter drawn at random: zero-initialised biases would hide a wrong formula."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module.eval()


# Both sides of the switch between the folded and the projected order.
TOKEN_COUNTS = [1, 7, FOLD_MAX_TOKENS, FOLD_MAX_TOKENS + 1, 30]


@pytest.mark.parametrize("tokens", TOKEN_COUNTS)
@pytest.mark.parametrize("tokens_query", [True, False], ids=["token->image", "image->token"])
def test_image_cross_attention_equals_the_attention_it_rewrites(tokens, tokens_query):
    attn = _random_(Attention(64, 4, downsample_rate=2), seed=tokens)
    gen = torch.Generator().manual_seed(1)
    few, many = torch.randn(1, tokens, 64, generator=gen), torch.randn(2, 1, 300, 64,
                                                                           generator=gen)
    q, k, v = (few, *many) if tokens_query else (many[0], few, few + 0.5)
    with torch.no_grad():
        want = copy.deepcopy(attn).double()(q.double(), k.double(), v.double())
        got = ImageCrossAttention(attn, tokens_query)(q, k, v)
    assert got.shape == q.shape
    assert (got.double() - want).abs().max() < 1e-5


@pytest.mark.parametrize("points", [2, FOLD_MAX_TOKENS - 5, FOLD_MAX_TOKENS - 4, 21])
def test_rewritten_decoder_matches_and_leaves_the_original_alone(points):
    decoder = _random_(MaskDecoder(), seed=3)
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    fast = rewrite_decoder(decoder)
    gen = torch.Generator().manual_seed(4)
    image, pe, dense = torch.randn(3, 1, 256, 64, 64, generator=gen)
    sparse = torch.randn(1, points, 256, generator=gen)
    with torch.no_grad():
        want = copy.deepcopy(decoder).double().forward_single(
            *(t.double() for t in (image, pe, sparse, dense)))
        got = fast.forward_single(image, pe, sparse, dense)
    # float32 rounding only: the unrewritten decoder in float32 is ~1e-6 (relative) off too.
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape
        assert (g.double() - w).abs().max() < 4e-6 * w.abs().max()
    assert all(torch.equal(v, before[k]) for k, v in decoder.state_dict().items())
    assert type(decoder.transformer.final_attn_token_to_image) is Attention


def test_exported_decoder_picks_the_order_at_run_time(tiny_model_dir):
    # One If per image attention (2 layers x 2 directions + the final one); the parity gate
    # checked both branches (its cases have 7 to 26 tokens).
    graph = onnx.load(str(tiny_model_dir / "decoder.onnx"), load_external_data=False).graph
    assert sum(node.op_type == "If" for node in graph.node) == 5
