"""The refiner's exact rewrites compute what the modules in models/ compute, up to rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from focsam_onnx.config import RefinerConfig
from focsam_onnx.export.refiner_rewrites import (
    FoldedQueryAttention,
    PiecewiseLinearPixelBranch,
    rewrite_refiner,
)
from focsam_onnx.models.refiner import FocusRefiner, RefinerAttention


def _random_(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter drawn at random: zero-initialised ones would hide a wrong formula."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module.eval()


@pytest.mark.parametrize("n_queries", [1, 3])
def test_folded_query_attention_equals_the_attention_it_folds(n_queries):
    attn = _random_(RefinerAttention(64, 4), seed=0)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(5, n_queries, 64, generator=gen)
    k, v = torch.randn(2, 5, 37, 64, generator=gen)
    with torch.no_grad():
        want = attn.double()(q.double(), k.double(), v.double())
        got = FoldedQueryAttention(attn.float())(q, k, v)
    assert got.shape == (5, n_queries, 64)
    assert (got.double() - want).abs().max() < 1e-5


def _pixel_mlp(seed: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 64), nn.Tanh())
    _random_(mlp, seed)
    with torch.no_grad():  # a unit without slope and two units with the same kink
        mlp[0].weight[3] = 0.0
        mlp[0].bias[3] = 0.5
        mlp[0].weight[5], mlp[0].bias[5] = mlp[0].weight[6], mlp[0].bias[6]
    return mlp


def test_pixel_branch_table_is_the_mlp_to_float64_precision():
    mlp = _pixel_mlp(seed=2)
    table = PiecewiseLinearPixelBranch(mlp)
    assert table.kinks.numel() == 31  # one unit has no kink
    s = torch.cat([torch.randn(20000, 1) * 5, table.kinks.view(-1, 1)])  # on the kinks too
    with torch.no_grad():
        exact = copy.deepcopy(mlp).double()(s.double())
        float32 = mlp(s)
        got = table(s)
    assert got.shape == (s.shape[0], 64)
    assert (got.double() - exact).abs().max() < 1e-6
    assert (got.double() - exact).abs().max() <= (float32.double() - exact).abs().max()


def test_rewritten_refiner_matches_and_leaves_the_original_alone():
    refiner = _random_(FocusRefiner(RefinerConfig(depth=2)), seed=3)
    before = {k: v.clone() for k, v in refiner.state_dict().items()}
    fast = rewrite_refiner(refiner)
    gen = torch.Generator().manual_seed(4)
    embeddings = torch.randn(1, 256, 64, 64, generator=gen)
    token = torch.randn(1, 1, 256, generator=gen)
    roi = torch.zeros(1, 1, 64, 64)
    roi[..., 10:40, 18:47] = 1.0
    with torch.no_grad():
        want, got = refiner(embeddings, token, roi), fast(embeddings, token, roi)
    assert (got - want).abs().max() < 5e-4  # the golden README's refined-map tolerance
    assert not torch.equal(got, embeddings)
    assert all(torch.equal(v, before[k]) for k, v in refiner.state_dict().items())
    assert type(refiner.blocks[0].img2cls.attn) is RefinerAttention
