"""The refiner's exact rewrites compute what the modules in models/ compute, up to rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from focsam_onnx.config import RefinerConfig
from focsam_onnx.export.refiner_rewrites import (
    FoldedQueryAttention,
    GatheredWindowsRefiner,
    PiecewiseLinearPixelBranch,
    rewrite_refiner,
    window_token_table,
)
from focsam_onnx.models.refiner import FocusRefiner, RefineBlock, RefinerAttention, _partition


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


@pytest.mark.parametrize("shifted", [False, True])
def test_window_table_lists_the_tokens_the_reference_partitions(shifted):
    block = RefineBlock(256, 8, 4.0, window_size=16, shifted=shifted, cls_scale=False)
    flat_index = torch.arange(64 * 64, dtype=torch.float64).view(1, 1, 64, 64)
    want = _partition(block._to_grid(flat_index), 16).flatten(1).long()  # (16, 256)
    assert torch.equal(window_token_table(64, 64, 16, block.shift), want)


def _refiner_inputs(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, 256, 64, 64, generator=gen)
    token = torch.randn(batch, 1, 256, generator=gen)
    roi = torch.zeros(batch, 1, 64, 64)
    roi[0, :, 10:40, 18:47] = 1.0
    roi[-1, :, 58:, :5] = 1.0  # the shifted blocks' windows wrap around this corner
    return embeddings, token, roi


@pytest.mark.parametrize("batch", [1, 2])
def test_rewritten_refiner_matches_and_leaves_the_original_alone(batch):
    refiner = _random_(FocusRefiner(RefinerConfig(depth=3)), seed=3)
    before = {k: v.clone() for k, v in refiner.state_dict().items()}
    fast = rewrite_refiner(refiner)
    assert isinstance(fast, GatheredWindowsRefiner)
    embeddings, token, roi = _refiner_inputs(batch, seed=4)
    with torch.no_grad():
        want, got = refiner(embeddings, token, roi), fast(embeddings, token, roi)
        untouched = refiner.embed_proj(embeddings)
    assert (got - want).abs().max() < 5e-4  # the golden README's refined-map tolerance
    assert not torch.equal(got, untouched)
    assert all(torch.equal(v, before[k]) for k, v in refiner.state_dict().items())
    assert type(refiner.blocks[0].img2cls.attn) is RefinerAttention


def test_gathered_windows_move_data_only():
    """Without the arithmetic rewrites, the gathered-windows refiner is the reference up to
    rounding of layout-dependent kernels: far below the rewrites' own differences."""
    refiner = _random_(FocusRefiner(RefinerConfig(depth=4)), seed=5)
    gathered = GatheredWindowsRefiner(copy.deepcopy(refiner), 64, 64)
    embeddings, token, roi = _refiner_inputs(2, seed=6)
    with torch.no_grad():
        want, got = refiner(embeddings, token, roi), gathered(embeddings, token, roi)
    assert (got - want).abs().max() < 1e-4 * want.abs().max()


def test_window_size_that_leaves_partial_windows_keeps_the_reference_blocks():
    refiner = _random_(FocusRefiner(RefinerConfig(depth=2, window_size=14)), seed=7)
    fast = rewrite_refiner(refiner)
    assert isinstance(fast, FocusRefiner)
    assert isinstance(fast.blocks[0].img2cls.attn, FoldedQueryAttention)
    with pytest.raises(ValueError, match="partial 14x14 windows"):
        GatheredWindowsRefiner(refiner, 64, 64)
    gathered = GatheredWindowsRefiner(FocusRefiner(RefinerConfig(depth=1)), 64, 64)
    with pytest.raises(ValueError, match=r"\(B, 256, 64, 64\)"):
        gathered(torch.zeros(1, 256, 32, 32), torch.zeros(1, 1, 256), torch.zeros(1, 1, 32, 32))
