"""Exact algebraic rewrites of the refiner for export: same function, far fewer FLOPs.

Each rewrite replaces one submodule of a (deep-copied) `FocusRefiner` with a module that
computes the same values in another order; only float rounding differs (the parity gate checks
the exported graph against the unrewritten torch refiner, with the golden tolerances).

* `FoldedQueryAttention` (Img2Cls, one query per window): k_proj and v_proj are folded into the
  query side. q.(Wk x + bk) = (Wk^T q).x + q.bk, and sum_n p_n (Wv x_n + bv) =
  Wv (sum_n p_n x_n) + bv sum_n p_n, so the 256 window tokens are never projected: per window
  and block 34 M multiply-adds become 1 M.
* `PiecewiseLinearPixelBranch` (P-DyReLU's pixel branch): the MLP Linear(1, C) -> ReLU ->
  Linear(C, 2C) sees one scalar per token, so before its Tanh it is a piecewise-linear function
  of that scalar with at most C kinks (where a hidden unit's pre-activation crosses 0). The
  slopes and intercepts of its C + 1 pieces are tabulated once in float64; per token the graph
  counts the kinks below the scalar and gathers one row: 34 M multiply-adds become 0.3 M.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from focsam_onnx.models.refiner import CrossAttentionBlock, FocusRefiner, PDyReLU, RefinerAttention


class FoldedQueryAttention(nn.Module):
    """`RefinerAttention` (zero key and value appended) for few queries over many tokens."""

    def __init__(self, attn: RefinerAttention) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.q_proj, self.proj = attn.q_proj, attn.proj
        heads = (self.num_heads, self.head_dim, -1)
        # (heads, head_dim, C) views of the key and value projections, and their biases.
        self.register_buffer("wk", attn.k_proj.weight.detach().reshape(heads).clone())
        self.register_buffer("bk", attn.k_proj.bias.detach().reshape(heads[:2]).clone())
        self.register_buffer("wv", attn.v_proj.weight.detach().reshape(heads).clone())
        self.register_buffer("bv", attn.v_proj.bias.detach().reshape(heads[:2]).clone())

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (B, Nq, C), k and v: (B, Nk, C) -> (B, Nq, C), as `RefinerAttention`."""
        q = self.q_proj(q).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        q = q * self.scale  # (B, h, Nq, d)
        q_folded = torch.matmul(q, self.wk)  # (B, h, Nq, C): Wk_h^T q
        logits = torch.matmul(q_folded, k.unsqueeze(1).transpose(-2, -1))  # (B, h, Nq, Nk)
        logits = logits + torch.matmul(q, self.bk.unsqueeze(-1))  # + q.bk
        # The appended zero key: one more logit fixed at 0; its zero value adds nothing.
        logits = torch.cat([logits, torch.zeros_like(logits[..., :1])], dim=-1)
        weights = logits.softmax(dim=-1)[..., :-1]
        mixed = torch.matmul(weights, v.unsqueeze(1))  # (B, h, Nq, C): sum_n p_n v_n
        out = torch.matmul(mixed, self.wv.transpose(-2, -1))  # (B, h, Nq, d): Wv_h mixed
        out = out + weights.sum(dim=-1, keepdim=True) * self.bv.unsqueeze(1)
        return self.proj(out.transpose(1, 2).flatten(2))


class PiecewiseLinearPixelBranch(nn.Module):
    """Linear(1, C) -> ReLU -> Linear(C, 2C) -> Tanh of a scalar, as a table of linear pieces."""

    def __init__(self, mlp: nn.Sequential) -> None:
        super().__init__()
        first, _, second, _ = mlp
        w1 = first.weight.detach().double().reshape(-1)  # (C,)
        b1 = first.bias.detach().double()
        w2, b2 = second.weight.detach().double(), second.bias.detach().double()  # (2C, C)
        sloped = w1 != 0
        kinks = torch.sort(-b1[sloped] / w1[sloped]).values  # (m,), m <= C
        # A representative scalar inside each of the m + 1 pieces decides which units are on.
        gaps = kinks[1:] - kinks[:-1]
        probes = torch.cat([kinks[:1] - 1.0, kinks[:-1] + gaps / 2, kinks[-1:] + 1.0])
        if kinks.numel() == 0:
            probes = torch.zeros(1, dtype=torch.float64)
        on = ((probes[:, None] * w1 + b1) > 0).double()  # (m+1, C): units active per piece
        self.register_buffer("kinks", kinks.float())
        self.register_buffer("slopes", ((on * w1) @ w2.T).float())  # (m+1, 2C)
        self.register_buffer("intercepts", ((on * b1) @ w2.T + b2).float())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """s: (..., 1) scalars -> (..., 2C) = tanh(W2 relu(w1 s + b1) + b2)."""
        piece = (s > self.kinks).sum(dim=-1)  # (...,) kinks strictly below s
        return torch.tanh(self.slopes[piece] * s + self.intercepts[piece])


def rewrite_refiner(refiner: FocusRefiner) -> FocusRefiner:
    """A copy of `refiner` with every rewrite above applied (`refiner` is left untouched)."""
    fast = copy.deepcopy(refiner)
    for module in fast.modules():
        if isinstance(module, CrossAttentionBlock):
            module.attn = FoldedQueryAttention(module.attn)
        elif isinstance(module, PDyReLU):
            module.pixel_mlp = PiecewiseLinearPixelBranch(module.pixel_mlp)
    return fast
