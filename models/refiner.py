"""FocSAM focus refiner (upstream `FocusRefiner`): Dwin-MSA blocks over the ROI's windows only.

Owns the refiner maths of FOCSAM.md section 5.2-5.7: the stem, plain and shifted refine blocks,
the Img2Cls cross-attention, the MSA module with P-DyReLU and the deformable conv, and the cls
aggregation. The ROI (coarse logits -> token mask) is computed elsewhere (`engine/roi.py`); this
module receives the 64x64 token mask.

Only the selected windows are computed: they are gathered with `nonzero` + `index_select` into a
batch of k windows, processed, and scattered back with `index_copy`, so the cost (and the ONNX
graph's cost) grows with the ROI and unselected windows stay bit-identical. Nothing branches on
tensor values, so the graph exports with k dynamic; k = 0 is allowed.
Submodule and parameter names equal upstream's, so `refine_head.*` checkpoint keys load strictly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from focsam_onnx.config import RefinerConfig
from focsam_onnx.models.deform_conv import DeformLayer

CLS_SCALE_MIN_RATIO = 0.01  # upstream clips the selected-window ratio before the log
GROUP_NORM_EPS = 1e-5


class BlockTrace(NamedTuple):
    """What one refine block did: `windows` (k,) int64 selected window indices (row-major, in
    the rolled grid for shifted blocks) and `cls` (B, 1, C), the running token after the block."""

    windows: torch.Tensor
    cls: torch.Tensor


class RefinerAttention(nn.Module):
    """Multi-head attention that appends one all-zero key and one all-zero value per head.

    The zero key adds a logit fixed at 0 to every softmax row and its zero value contributes
    nothing, i.e. an "off-by-one" softmax. The scale multiplies q before q.k^T, as upstream.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, head_dim), without naming the (dynamic) batch size."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (B, Nq, C), k and v: (B, Nk, C) -> (B, Nq, C)."""
        q = self._heads(self.q_proj(q)) * self.scale
        k = F.pad(self._heads(self.k_proj(k)), (0, 0, 0, 1))  # + one zero key per head
        v = F.pad(self._heads(self.v_proj(v)), (0, 0, 0, 1))  # + one zero value per head
        weights = torch.matmul(q, k.transpose(-2, -1)).softmax(dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).flatten(2)
        return self.proj(out)


class CrossAttentionBlock(nn.Module):
    """Img2Cls: the window's cls token attends to the window's tokens (section 5.4)."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        # Registration order reproduces upstream's state_dict order (own parameters first).
        self.gamma1 = nn.Parameter(torch.ones(embed_dim))
        self.gamma2 = nn.Parameter(torch.ones(embed_dim))
        self.norm_q = nn.LayerNorm(embed_dim)
        self.norm_kv = nn.LayerNorm(embed_dim)
        self.attn = RefinerAttention(embed_dim, num_heads)
        self.norm = nn.LayerNorm(embed_dim)
        hidden = int(mlp_ratio * embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, embed_dim))

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """cls: (k, 1, C), tokens: (k, N, C) one window per row -> updated cls (k, 1, C)."""
        kv = self.norm_kv(tokens)
        x = cls + self.gamma1 * self.attn(self.norm_q(cls), kv, kv)
        return x + self.gamma2 * self.mlp(self.norm(x))


class PDyReLU(nn.Module):
    """Pixel-wise dynamic ReLU (section 5.5.1): max of a per-token and a per-window affine map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.pixel_scale = nn.Parameter(torch.zeros(2 * channels))
        self.pixel_bias = nn.Parameter(torch.zeros(2 * channels))
        self.channel_scale = nn.Parameter(torch.zeros(2 * channels))
        self.channel_bias = nn.Parameter(torch.zeros(2 * channels))
        self.pixel_mlp = nn.Sequential(nn.Linear(1, channels), nn.ReLU(),
                                       nn.Linear(channels, 2 * channels), nn.Tanh())
        self.channel_mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(),
                                         nn.Linear(channels, 2 * channels), nn.Tanh())

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """x: (k, N, C) window tokens, cls: (k, 1, C) projected token -> (k, N, C)."""
        c = self.channels
        # Per-token scalar: plain dot product of the token with the window's cls (no scaling).
        pixel = self.pixel_mlp(torch.matmul(x, cls.transpose(-2, -1)))
        pixel = pixel * self.pixel_scale.exp() + self.pixel_bias  # (k, N, 2C)
        pixel_act = pixel[..., :c] * x + pixel[..., c:]
        channel = self.channel_mlp(x.mean(dim=1, keepdim=True))
        channel = channel * self.channel_scale.exp() + self.channel_bias  # (k, 1, 2C)
        channel_act = channel[..., :c] * x + channel[..., c:]
        return torch.maximum(pixel_act, channel_act)


def group_norm_one_group(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm(1, C) of each map of x (k, C, H, W) on its own (biased variance, norm's eps)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=(1, 2, 3), keepdim=True)
    normed = centred * torch.rsqrt(var + norm.eps)
    return normed * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


class MSAModule(nn.Module):
    """Cls2Img (section 5.5): window self-attention -> LN -> P-DyReLU(cls) -> DCN -> GN -> ReLU."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.gamma1 = nn.Parameter(torch.ones(1, embed_dim, 1, 1))
        self.gamma2 = nn.Parameter(torch.ones(1, embed_dim, 1, 1))
        self.cls_proj = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.attn = RefinerAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.relu1 = PDyReLU(embed_dim)
        self.conv2 = DeformLayer(embed_dim, embed_dim)
        self.norm2 = nn.GroupNorm(1, embed_dim, eps=GROUP_NORM_EPS)

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """x: (k, C, ws, ws) windows, cls: (k, 1, C) their Img2Cls tokens -> (k, C, ws, ws)."""
        height, width = x.shape[-2:]
        tokens = x.flatten(2).transpose(1, 2)  # (k, ws*ws, C), row-major; no pre-norm
        attn = self.norm1(self.attn(tokens, tokens, tokens))
        attn = self.relu1(attn, self.cls_proj(cls))
        y = x + self.gamma1 * attn.transpose(1, 2).unflatten(2, (height, width))
        z = torch.relu(group_norm_one_group(self.conv2(y), self.norm2))
        # QUIRK (upstream): the second residual adds to the block input x, not to y.
        return x + self.gamma2 * z


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, C, H, W), H and W multiples of ws -> (B*nh*nw, C, ws, ws), row-major per image."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * (h // ws) * (w // ws), c, ws, ws)


def _unpartition(windows: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `_partition`: (B*nh*nw, C, ws, ws) -> (B, C, H, W)."""
    ws = windows.shape[-1]
    c = windows.shape[1]
    x = windows.view(b, h // ws, w // ws, c, ws, ws).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


class RefineBlock(nn.Module):
    """One Dwin-MSA block (section 5.3); `shifted` rolls the map by -ws//2 first (odd blocks)."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 shifted: bool, cls_scale: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2 if shifted else 0
        self.img2cls = CrossAttentionBlock(embed_dim, num_heads, mlp_ratio)
        self.cls2img = MSAModule(embed_dim, num_heads)
        self.cls_scale_proj: nn.Linear | None = None
        if cls_scale:
            self.cls_scale_proj = nn.Linear(1, 1)
            nn.init.ones_(self.cls_scale_proj.weight)
            nn.init.zeros_(self.cls_scale_proj.bias)

    def _to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right to a multiple of ws, then roll by -shift (upstream's order)."""
        ws = self.window_size
        pad_h, pad_w = -t.shape[-2] % ws, -t.shape[-1] % ws
        if pad_h or pad_w:
            t = F.pad(t, (0, pad_w, 0, pad_h))
        if self.shift:
            t = torch.roll(t, shifts=(-self.shift, -self.shift), dims=(-2, -1))
        return t

    def forward(self, x: torch.Tensor, cls: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W), cls: (B, 1, C), mask: (B, 1, H, W) 0/1 token mask.

        Returns (x, cls, windows): the updated map and token, and the (k,) int64 indices of the
        selected windows among the B*nW windows (row-major, in the rolled grid if shifted).
        """
        b, c, h, w = x.shape
        grid = self._to_grid(x)
        hp, wp = grid.shape[-2:]
        windows = _partition(grid, self.window_size)  # (B*nW, C, ws, ws)
        n_win = windows.shape[0] // b
        selected = _partition(self._to_grid(mask), self.window_size).amax(dim=(1, 2, 3)) > 0
        index = torch.nonzero(selected).squeeze(1)  # (k,) int64, k data-dependent

        cls_all = cls.unsqueeze(1).expand(b, n_win, 1, c).reshape(b * n_win, 1, c)
        picked = windows.index_select(0, index)  # (k, C, ws, ws)
        cls_new = self.img2cls(cls_all.index_select(0, index), picked.flatten(2).transpose(1, 2))
        picked = self.cls2img(picked, cls_new)
        windows = windows.index_copy(0, index, picked)
        cls_all = cls_all.index_copy(0, index, cls_new)

        x = _unpartition(windows, b, hp, wp)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(-2, -1))
        if (hp, wp) != (h, w):
            x = x[..., :h, :w]
        # Unselected windows contribute the unchanged cls to the mean.
        cls_mean = cls_all.view(b, n_win, c).mean(dim=1, keepdim=True)
        if self.cls_scale_proj is None:
            return x, cls_mean, index
        ratio = selected.view(b, n_win).float().mean(dim=1).view(b, 1, 1)
        scale = self.cls_scale_proj(-ratio.clamp(min=CLS_SCALE_MIN_RATIO).log()).exp()
        return x, scale * (cls_mean - cls) + cls, index


class FocusRefiner(nn.Module):
    """The refine head: `embed_proj` on the whole map, `token_proj` on the mask token, then
    `depth` blocks alternating plain / shifted windows. Output = the map after the last block."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.embed_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.token_proj = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(
            RefineBlock(dim, cfg.num_heads, cfg.mlp_ratio, cfg.window_size,
                        shifted=i % 2 == 1, cls_scale=i < cfg.depth - 1)
            for i in range(cfg.depth)
        )

    def _check_inputs(self, image_embeddings: torch.Tensor, mask_token: torch.Tensor,
                      roi_mask: torch.Tensor) -> None:
        dim = self.cfg.embed_dim
        if image_embeddings.dim() != 4 or image_embeddings.shape[1] != dim:
            raise ValueError(f"image_embeddings must be (B, {dim}, H, W), "
                             f"got {tuple(image_embeddings.shape)}")
        b, _, h, w = image_embeddings.shape
        if tuple(mask_token.shape) != (b, 1, dim):
            raise ValueError(f"mask_token must be ({b}, 1, {dim}), got {tuple(mask_token.shape)}")
        if tuple(roi_mask.shape) != (b, 1, h, w):
            raise ValueError(f"roi_mask must be ({b}, 1, {h}, {w}), got {tuple(roi_mask.shape)}")

    def forward_with_trace(self, image_embeddings: torch.Tensor, mask_token: torch.Tensor,
                           roi_mask: torch.Tensor) -> tuple[torch.Tensor, list[BlockTrace]]:
        """Like `forward`, plus one `BlockTrace` (selected windows, cls after it) per block."""
        self._check_inputs(image_embeddings, mask_token, roi_mask)
        x = self.embed_proj(image_embeddings)
        cls = self.token_proj(mask_token)
        trace = []
        for block in self.blocks:
            x, cls, windows = block(x, cls, roi_mask)
            trace.append(BlockTrace(windows, cls))
        return x, trace

    def forward(self, image_embeddings: torch.Tensor, mask_token: torch.Tensor,
                roi_mask: torch.Tensor) -> torch.Tensor:
        """Refine the image embeddings inside the ROI.

        image_embeddings: (B, 256, 64, 64) float32, the original SAM embeddings E0.
        mask_token: (B, 1, 256) float32, the decoder's first mask token ("single mask with token").
        roi_mask: (B, 1, 64, 64) float32 0/1 token mask of the expanded ROI bbox.
        Returns (B, 256, 64, 64): embed_proj(E0), updated in every window selected by a block.
        An all-zero roi_mask selects nothing and returns embed_proj(E0).
        """
        return self.forward_with_trace(image_embeddings, mask_token, roi_mask)[0]
