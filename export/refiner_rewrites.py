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
* `GatheredWindowsRefiner` (the blocks' data movement): the map is kept token-major, (B*H*W, C),
  for all blocks; each block gathers its selected windows' rows straight from it through a
  constant table of every window's token indices (the shifted blocks' roll is folded into the
  table) and writes them back with one scatter. The reference rolls, partitions, copies and
  un-partitions the whole 64x64 map twice per block, and transposes every window between the
  attention's token layout and the convolutions' channel layout; this keeps the windows in token
  layout except around the two convolutions. Pure data movement: the same arithmetic on every
  value (kernels that depend on memory layout may round differently).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from focsam_onnx.config import EMBED_GRID
from focsam_onnx.models.refiner import (
    CLS_SCALE_MIN_RATIO,
    CrossAttentionBlock,
    FocusRefiner,
    MSAModule,
    PDyReLU,
    RefineBlock,
    RefinerAttention,
    group_norm_one_group,
)


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
        # Kinks strictly below s, counted in float (exact up to 2**24; onnxruntime's int64
        # ReduceSum is several times slower than its float one).
        piece = (s > self.kinks).to(s.dtype).sum(dim=-1).long()
        return torch.tanh(self.slopes[piece] * s + self.intercepts[piece])


def window_token_table(height: int, width: int, window_size: int, shift: int) -> torch.Tensor:
    """(nW, ws*ws) int64: row w lists, row-major, the flat indices (row * width + col) of the map
    tokens in window w of the grid rolled by -shift (windows row-major, as `_partition`)."""
    ws = window_size
    rows = torch.arange(height).view(height // ws, 1, ws, 1)
    cols = torch.arange(width).view(1, width // ws, 1, ws)
    flat = ((rows + shift) % height) * width + (cols + shift) % width  # (nh, nw, ws, ws)
    return flat.reshape(-1, ws * ws)


def _msa_on_tokens(msa: MSAModule, tokens: torch.Tensor, cls: torch.Tensor,
                   window_size: int) -> torch.Tensor:
    """`MSAModule.forward` with windows given and returned as (k, ws*ws, C) tokens."""
    attn = msa.norm1(msa.attn(tokens, tokens, tokens))
    attn = msa.relu1(attn, msa.cls_proj(cls))
    y = tokens + msa.gamma1.view(1, 1, -1) * attn
    y = y.transpose(1, 2).unflatten(2, (window_size, window_size))  # (k, C, ws, ws)
    z = torch.relu(group_norm_one_group(msa.conv2(y), msa.norm2))
    return tokens + msa.gamma2.view(1, 1, -1) * z.flatten(2).transpose(1, 2)


class GatheredWindowsRefiner(nn.Module):
    """`FocusRefiner` on a token-major map, for a grid that its window size divides."""

    def __init__(self, refiner: FocusRefiner, height: int, width: int) -> None:
        super().__init__()
        ws = refiner.cfg.window_size
        if height % ws or width % ws:
            raise ValueError(f"a {height}x{width} map has partial {ws}x{ws} windows")
        self.embed_proj, self.token_proj = refiner.embed_proj, refiner.token_proj
        self.blocks = refiner.blocks
        self.height, self.width, self.window_size = height, width, ws
        for shift in {block.shift for block in refiner.blocks}:
            self.register_buffer(f"table_{shift}", window_token_table(height, width, ws, shift))

    def _block(self, block: RefineBlock, x: torch.Tensor, cls: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One `RefineBlock`: x (B*H*W, C) token-major map, cls (B, 1, C), mask (B, H*W)."""
        b, c = cls.shape[0], cls.shape[-1]
        table: torch.Tensor = getattr(self, f"table_{block.shift}")  # (nW, N)
        n_win = table.shape[0]
        selected = mask[:, table].amax(dim=-1) > 0  # (B, nW)
        index = torch.nonzero(selected.flatten()).squeeze(1)  # (k,) among the B*nW windows
        image = torch.div(index, n_win, rounding_mode="floor")
        rows = image[:, None] * (self.height * self.width) + table.index_select(0, index % n_win)
        picked = x[rows]  # (k, N, C)
        cls_all = cls.unsqueeze(1).expand(b, n_win, 1, c).reshape(b * n_win, 1, c)
        cls_new = block.img2cls(cls_all.index_select(0, index), picked)
        picked = _msa_on_tokens(block.cls2img, picked, cls_new, self.window_size)
        x = x.index_copy(0, rows.flatten(), picked.flatten(0, 1))
        cls_all = cls_all.index_copy(0, index, cls_new)
        cls_mean = cls_all.view(b, n_win, c).mean(dim=1, keepdim=True)
        if block.cls_scale_proj is None:
            return x, cls_mean
        ratio = selected.float().mean(dim=1).view(b, 1, 1)
        scale = block.cls_scale_proj(-ratio.clamp(min=CLS_SCALE_MIN_RATIO).log()).exp()
        return x, scale * (cls_mean - cls) + cls

    def forward(self, image_embeddings: torch.Tensor, mask_token: torch.Tensor,
                roi_mask: torch.Tensor) -> torch.Tensor:
        """As `FocusRefiner.forward`, for (B, C, height, width) embeddings."""
        b, c, h, w = image_embeddings.shape
        if (h, w) != (self.height, self.width):  # the window tables are for this grid only
            raise ValueError(f"image_embeddings must be (B, {c}, {self.height}, {self.width}), "
                             f"got {tuple(image_embeddings.shape)}")
        # embed_proj (a 1x1 conv) as a matrix product on the tokens: token-major output direct.
        weight = self.embed_proj.weight.view(c, c)
        tokens = image_embeddings.flatten(2).transpose(1, 2).reshape(b * h * w, c)
        x = F.linear(tokens, weight, self.embed_proj.bias)
        cls = self.token_proj(mask_token)
        mask = roi_mask.flatten(1)  # (B, H*W)
        for block in self.blocks:
            x, cls = self._block(block, x, cls, mask)
        return x.view(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)


def rewrite_refiner(refiner: FocusRefiner, height: int = EMBED_GRID,
                    width: int = EMBED_GRID) -> nn.Module:
    """`refiner` with every rewrite above applied, for (B, C, height, width) embeddings; a
    deep copy (`refiner` is left untouched). The gathered windows need a grid that the window
    size divides (the released 16 on 64x64); otherwise the blocks keep the reference's."""
    fast = copy.deepcopy(refiner)
    for module in fast.modules():
        if isinstance(module, CrossAttentionBlock):
            module.attn = FoldedQueryAttention(module.attn)
        elif isinstance(module, PDyReLU):
            module.pixel_mlp = PiecewiseLinearPixelBranch(module.pixel_mlp)
    ws = refiner.cfg.window_size
    if height % ws or width % ws:
        return fast
    return GatheredWindowsRefiner(fast, height, width)
