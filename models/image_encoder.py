"""SAM ViT image encoder (upstream `SAMWindowViT`, official SAM `ImageEncoderViT`), spec §2.

Parameter names equal official SAM's `image_encoder.*` names (FocSAM: `backbone.*`). Shapes are
static for the 1024x1024 input, windows are batched, and attention is plain matmul + softmax,
so the module exports with `torch.onnx.export(..., dynamo=True)` and stays fast on CPU.
Also owns `LayerNorm2d`, which the prompt encoder and the mask decoder reuse.
"""

from __future__ import annotations

import torch
from torch import nn

from focsam_onnx.config import EMBED_GRID, IMAGE_SIZE, EncoderConfig

LN2D_EPS = 1e-6  # every LayerNorm2d in SAM (neck, mask downscaling, output upscaling)
HEADS_AT_ONCE = 4  # attention heads computed together (bounds global attention's memory)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map, biased variance, affine per channel."""

    def __init__(self, num_channels: int, eps: float = LN2D_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear (`lin1`, `lin2`): the ViT MLP and the decoder's MLP."""

    def __init__(self, dim: int, hidden_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class PatchEmbed(nn.Module):
    """Conv2d(3 -> D, kernel = stride = patch) then channels-last."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (1, 3, 1024, 1024) -> (1, 64, 64, D) NHWC, before the absolute position embedding."""
        return self.proj(x).permute(0, 2, 3, 1)


def _relative_index(size: int, device: torch.device) -> torch.Tensor:
    """(size, size) int64 table index `qi - ki + size - 1` (query size == key size here)."""
    coords = torch.arange(size, device=device)
    return coords[:, None] - coords[None, :] + (size - 1)


class Attention(nn.Module):
    """Multi-head self-attention with SAM's decomposed relative position bias (spec §2.2.4-5)."""

    def __init__(self, dim: int, num_heads: int, grid_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.grid_size = grid_size
        # Tables are registered before qkv/proj so that state_dict() follows upstream's order.
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_size - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_size - 1, self.head_dim))
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, S, D) tokens of B windows (or B=1 for global) -> (B, S, S, D)."""
        return self.proj(self.attend(self.qkv(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv: (B, S, S, 3D) projected tokens -> (B, S, S, D) attention output before `proj`.

        Heads are processed `HEADS_AT_ONCE` at a time: for global attention one head's
        attention matrix is 4096 x 4096 floats (64 MB), so all 16 of ViT-H at once would hold
        over 1 GB per intermediate.
        """
        b, h, w, _ = qkv.shape
        if h != self.grid_size or w != self.grid_size:
            raise ValueError(f"attention expects a {self.grid_size}x{self.grid_size} grid, "
                             f"got {h}x{w}")
        # qkv channel layout is [q | k | v], each [head0 | head1 | ...].
        qkv = qkv.reshape(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        outs = []
        for start in range(0, self.num_heads, HEADS_AT_ONCE):
            q, k, v = qkv[:, :, start:start + HEADS_AT_ONCE].reshape(3, -1, h * w,
                                                                     self.head_dim).unbind(0)
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = self._add_rel_pos(attn, q, h, w).softmax(dim=-1)
            outs.append((attn @ v).view(b, -1, h, w, self.head_dim))
        out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
        return out.permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)

    def _add_rel_pos(self, attn: torch.Tensor, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """attn: (B*heads, h*w, h*w); q: (B*heads, h*w, hd), unscaled (spec §2.2.5)."""
        bn, _, c = q.shape
        table_h = self.rel_pos_h[_relative_index(h, q.device)]  # (h, kh, hd)
        table_w = self.rel_pos_w[_relative_index(w, q.device)]  # (w, kw, hd)
        r_q = q.reshape(bn, h, w, c)
        # Per query row (column), one matmul against its own table slice: batched over rows
        # instead of an einsum, which ONNX Runtime runs slowly on CPU.
        rel_h = r_q.permute(1, 0, 2, 3).reshape(h, bn * w, c) @ table_h.transpose(1, 2)
        rel_h = rel_h.reshape(h, bn, w, h).permute(1, 0, 2, 3)  # (bn, qh, qw, kh)
        rel_w = r_q.permute(2, 0, 1, 3).reshape(w, bn * h, c) @ table_w.transpose(1, 2)
        rel_w = rel_w.reshape(w, bn, h, w).permute(1, 2, 0, 3)  # (bn, qh, qw, kw)
        attn = attn.view(bn, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
        return attn.view(bn, h * w, h * w)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """x: (1, H, W, D), H and W multiples of `window` -> (nWh*nWw, window, window, D), row-major."""
    b, h, w, d = x.shape
    nh, nw = h // window, w // window
    x = x.view(b, nh, window, nw, window, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * nh * nw, window, window, d)


def window_unpartition(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (nW, window, window, D) -> (1, h, w, D), padding cropped."""
    nh, nw = -(-h // window), -(-w // window)
    d = windows.shape[-1]
    x = windows.view(1, nh, nw, window, window, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(1, nh * window, nw * window, d)[:, :h, :w, :]


class Block(nn.Module):
    """Pre-norm ViT block; `window_size == 0` means global attention over the 64x64 grid."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 eps: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, window_size if window_size > 0 else EMBED_GRID)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (1, 64, 64, D) -> (1, 64, 64, D)."""
        h, w = x.shape[1], x.shape[2]
        qkv = self.attn.qkv(self.norm1(x))
        if self.window_size > 0:
            # Upstream pads norm1's output with zero tokens; their q/k/v are exactly the qkv
            # bias, so the projection runs on the 64x64 real tokens only (70x70 padded: -18%)
            # and the padding is appended afterwards. `proj` likewise runs after the crop.
            qkv = _pad_with(qkv, self.attn.qkv.bias, self.window_size)
            u = window_unpartition(self.attn.attend(window_partition(qkv, self.window_size)),
                                   self.window_size, h, w)
        else:
            u = self.attn.attend(qkv)
        x = x + self.attn.proj(u)
        return x + self.mlp(self.norm2(x))


def _pad_with(x: torch.Tensor, value: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (1, H, W, C) bottom/right to a multiple of `multiple` with the vector `value` (C,)."""
    _, h, w, c = x.shape
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_w:
        x = torch.cat([x, value.expand(1, h, pad_w, c)], dim=2)
    if pad_h:
        x = torch.cat([x, value.expand(1, pad_h, w + pad_w, c)], dim=1)
    return x


class ImageEncoderViT(nn.Module):
    """SAM ViT: (1, 3, 1024, 1024) normalised image (B, G, R upstream) -> (1, 256, 64, 64)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        grid = IMAGE_SIZE // cfg.patch_size
        if grid != EMBED_GRID:
            raise ValueError(f"patch_size {cfg.patch_size} gives a {grid} grid, need {EMBED_GRID}")
        self.cfg = cfg
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio,
                  0 if i in cfg.global_attn_indexes else cfg.window_size, cfg.layer_norm_eps)
            for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (1, 3, 1024, 1024) float32 -> embeddings (1, 256, 64, 64)."""
        if tuple(x.shape) != (1, 3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected input (1, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), "
                             f"got {tuple(x.shape)}")
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
