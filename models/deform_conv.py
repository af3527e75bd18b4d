"""Modulated deformable 3x3 convolution (DCNv2) in plain torch ops that export to standard ONNX.

Owns the operator (`modulated_deform_conv3x3`), its weight-holding module (`ModulatedDeformConv3x3`,
upstream `mmcv.ops.ModulatedDeformConv2d` with stride 1, padding 1, dilation 1, groups 1, no bias)
and the refiner's `DeformLayer` (offset/mask predictor + DCN), with upstream parameter names.

Semantics (mmcv / torchvision layout, FOCSAM.md section 5.5.2): for output pixel (i, j) and kernel
tap k = 3a + b, the sample position is `py = i - 1 + a + offset[2k]`,
`px = j - 1 + b + offset[2k+1]` (row offset first); the value is a bilinear sample of the input
in which every integer corner outside the map contributes 0 (so the sample is 0 whenever
`py <= -1`, `py >= H`, `px <= -1` or `px >= W`); it is multiplied by `mask[k]` and contracted
with `weight[:, :, a, b]`.
`F.grid_sample(bilinear, zeros, align_corners=True)` applies this corner rule (the validity test is
also applied explicitly, see below), so the operator is grid_sample + multiply + one batched
matmul (im2col).

The module calls it through the custom op `focsam::modulated_deform_conv3x3` (same maths in
eager mode), so that the exporter can emit ONNX's own `DeformConv` (opset 19), which onnxruntime
runs about 2.5x faster than the grid_sample form (see `focsam_onnx.export.custom_ops`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 3
TAPS = KERNEL * KERNEL  # 9 taps, k = 3a + b, row-major
OFFSET_CHANNELS = 2 * TAPS  # 18: (dy, dx) interleaved per tap
OFFSET_MASK_CHANNELS = 3 * TAPS  # 27: 18 offsets + 9 mask logits


def _tap_base_positions(height: int, width: int, dtype: torch.dtype,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Undeformed sample positions: rows (9, H, 1) = i - 1 + a, columns (9, 1, W) = j - 1 + b."""
    tap = torch.arange(TAPS, device=device)
    tap_row = (tap // KERNEL - 1).to(dtype).view(TAPS, 1, 1)
    tap_col = (tap % KERNEL - 1).to(dtype).view(TAPS, 1, 1)
    rows = torch.arange(height, dtype=dtype, device=device).view(1, height, 1)
    cols = torch.arange(width, dtype=dtype, device=device).view(1, 1, width)
    return rows + tap_row, cols + tap_col


def _check_shapes(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  weight: torch.Tensor) -> None:
    # Only static dims are compared: the batch dim is dynamic (number of selected windows) when
    # exported, and comparing it would pin it.
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height < 2 or width < 2:
        raise ValueError(f"the map must be at least 2x2 for align_corners grids, "
                         f"got {height}x{width}")
    if offset.dim() != 4 or offset.shape[1] != OFFSET_CHANNELS or offset.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"offset must be (N, {OFFSET_CHANNELS}, {height}, {width}), "
                         f"got {tuple(offset.shape)}")
    if mask.dim() != 4 or mask.shape[1] != TAPS or mask.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"mask must be (N, {TAPS}, {height}, {width}), got {tuple(mask.shape)}")
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[-2:] != (KERNEL, KERNEL):
        raise ValueError(f"weight must be (O, {x.shape[1]}, 3, 3), got {tuple(weight.shape)}")


def modulated_deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                             weight: torch.Tensor) -> torch.Tensor:
    """DCNv2 3x3, stride 1, padding 1, dilation 1, one group, one deform group, no bias.

    x:      (N, C, H, W) input; samples outside this map are 0 (each map, e.g. a window, is
            convolved on its own).
    offset: (N, 18, H, W); channel 2k = dy (row), 2k+1 = dx (column) of tap k = 3a + b.
    mask:   (N, 9, H, W) modulation of tap k, used as given: the caller applies the sigmoid, as
            with mmcv's / torchvision's operators.
    weight: (O, C, 3, 3).
    Returns (N, O, H, W). Works for N = 0.
    """
    _check_shapes(x, offset, mask, weight)
    height, width = x.shape[-2:]
    base_y, base_x = _tap_base_positions(height, width, x.dtype, x.device)
    py = base_y + offset[:, 0::2]  # (N, 9, H, W)
    px = base_x + offset[:, 1::2]
    # align_corners=True maps g = -1 / +1 to pixel 0 / size-1, so pixel p <-> 2p/(size-1) - 1.
    gy = py * (2.0 / (height - 1)) - 1.0
    gx = px * (2.0 / (width - 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).flatten(1, 2)  # (N, 9H, W, 2), taps stacked along rows
    samples = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    # The grid round trip can turn p = -1 into -0.99999994 and leak an ulp-sized weight onto
    # pixel 0; the explicit DCN validity test keeps samples at p <= -1 or p >= size exactly 0.
    valid = (py > -1) & (py < height) & (px > -1) & (px < width)
    mask = mask * valid.to(mask.dtype)
    samples = samples.unflatten(2, (TAPS, height)) * mask.unsqueeze(1)  # (N, C, 9, H, W)
    columns = samples.flatten(1, 2).flatten(2)  # (N, C*9, H*W), row c*9 + k as weight's layout
    out = torch.matmul(weight.flatten(1), columns)  # (N, O, H*W)
    return out.unflatten(2, (height, width))


@torch.library.custom_op("focsam::modulated_deform_conv3x3", mutates_args=())
def deform_conv_op(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                   weight: torch.Tensor) -> torch.Tensor:
    """`modulated_deform_conv3x3` as one opaque op, so that export sees a single node."""
    return modulated_deform_conv3x3(x, offset, mask, weight)


@deform_conv_op.register_fake
def _deform_conv_shape(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                       weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


class ModulatedDeformConv3x3(nn.Module):
    """Holds the DCN weight (upstream `dcn`, mmcv `ModulatedDeformConv2d` without bias)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, KERNEL, KERNEL))
        # Upstream DeformLayer.c2_msra_fill: N(0, sqrt(2 / (fan_in + fan_out))).
        fan_in = in_channels * TAPS
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (fan_in + out_channels)))

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W), offset (N, 18, H, W), mask (N, 9, H, W) in [0, 1] -> (N, O, H, W)."""
        return deform_conv_op(x, offset, mask, self.weight)


class DeformLayer(nn.Module):
    """Upstream `DeformLayer` (modulated): a 3x3 conv predicts 27 channels from x, then the DCN.

    Channels 0..17 go to the DCN unchanged as interleaved (dy, dx) offsets; upstream names the
    chunks `offset_x` / `offset_y` and concatenates them back in order, so nothing is swapped.
    Channels 18..26 pass through a sigmoid and become the modulation mask.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.dcn_offset = nn.Conv2d(in_channels, OFFSET_MASK_CHANNELS, KERNEL, padding=1)
        self.dcn = ModulatedDeformConv3x3(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W), each map convolved with zero padding at its border -> (N, O, H, W)."""
        offset_mask = self.dcn_offset(x)
        offset = offset_mask[:, :OFFSET_CHANNELS]
        mask = offset_mask[:, OFFSET_CHANNELS:].sigmoid()
        return self.dcn(x, offset, mask)
