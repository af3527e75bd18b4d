"""SAM prompt encoder (upstream `SAMPromptEncoder`, FocSAM `neck.*`), spec §3.

Branch-free on tensor values so that the point count can be a dynamic ONNX axis: label edits are
`torch.where` / mask multiplications and the previous-mask prompt is blended with
`has_mask_input` instead of an `if`. Building the point list (clicks, then a box's two corners
or the padding point) is the caller's job (`sparse_points`), which keeps the exported graph's
input the full point list, as in segment-anything's ONNX interface.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from focsam_onnx.config import EMBED_GRID, IMAGE_SIZE, LOW_RES_MASK, PROMPT_DIM
from focsam_onnx.models.image_encoder import LayerNorm2d

PAD_LABEL = -1.0  # the padding point's label; its encoding becomes not_a_point_embed
BOX_LABELS = (2.0, 3.0)  # a box is two points: top-left corner label 2, bottom-right label 3


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (u, v) points (spec §3.1)."""

    def __init__(self, num_pos_feats: int = PROMPT_DIM // 2, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix",
                             scale * torch.randn(2, num_pos_feats))

    def encode(self, uv: torch.Tensor) -> torch.Tensor:
        """uv: (..., 2) in [0, 1], (u = x fraction, v = y fraction) -> (..., 256) [sin | cos]."""
        proj = (2 * uv - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid_pe(self, size: int = EMBED_GRID) -> torch.Tensor:
        """PE of every cell centre of a size x size grid: (1, 256, size, size) (spec §3.4)."""
        device = self.positional_encoding_gaussian_matrix.device
        centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
        v, u = torch.meshgrid(centres, centres, indexing="ij")  # v: row, u: column
        return self.encode(torch.stack([u, v], dim=-1)).permute(2, 0, 1).unsqueeze(0)


def sparse_points(coords: torch.Tensor, labels: torch.Tensor,
                  box: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's point list: the clicks, then the box's corners (labels 2, 3) if a box is
    given, else the padding point (0, 0) with label -1 (segment-anything pads only without a box).

    coords: (1, N, 2) float32, (x, y) in the 1024 frame; labels: (1, N) float32 1/0;
    box: (1, 4) float32 (x0, y0, x1, y1) in the 1024 frame, or None.
    Returns coords (1, N + 2 or N + 1, 2) and labels of the same length.
    """
    if box is None:
        extra_xy = torch.zeros(coords.shape[0], 1, 2, dtype=coords.dtype, device=coords.device)
        extra_labels = torch.full((labels.shape[0], 1), PAD_LABEL, dtype=labels.dtype,
                                  device=labels.device)
    else:
        if tuple(box.shape) != (coords.shape[0], 4):
            raise ValueError(f"box must be ({coords.shape[0]}, 4) (x0, y0, x1, y1), "
                             f"got {tuple(box.shape)}")
        extra_xy = box.to(coords.dtype).reshape(-1, 2, 2)
        extra_labels = torch.tensor([BOX_LABELS], dtype=labels.dtype,
                                    device=labels.device).expand(labels.shape[0], 2)
    return torch.cat([coords, extra_xy], dim=1), torch.cat([labels, extra_labels], dim=1)


class PromptEncoder(nn.Module):
    """Points and the previous low-res mask -> sparse (1, N, 256) and dense (1, 256, 64, 64)."""

    def __init__(self, embed_dim: int = PROMPT_DIM, mask_in_chans: int = 16) -> None:
        super().__init__()
        self.pos_embed_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: negative click, 1: positive click, 2 / 3: a box's top-left / bottom-right corner.
        self.point_embeds = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sparse tokens of a full point list (`sparse_points`), spec §3.2.

        coords: (1, N, 2) float32, (x, y) in the 1024 frame, without the +0.5 pixel-centre shift;
        labels: (1, N) float32, 1 positive, 0 negative, 2 / 3 box corners, -1 padding.
        Returns (1, N, 256). Upstream shifts every point and box corner by +0.5; shifting the
        padding point too changes nothing because its encoding is replaced by
        `not_a_point_embed`. Each label adds its learned embedding, as segment-anything's ONNX
        wrapper does: for labels 0 and 1 the added zeros leave upstream's sum bit for bit.
        """
        pe = self.pos_embed_layer.encode((coords + 0.5) / IMAGE_SIZE)
        labels = labels.unsqueeze(-1)
        pe = torch.where(labels == PAD_LABEL, self.not_a_point_embed.weight, pe)
        for label, embed in enumerate(self.point_embeds):
            pe = pe + (labels == label).to(pe.dtype) * embed.weight
        return pe

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Dense prompt: (1, 256, 64, 64), blended without branching on tensor values.

        mask_input: (1, 1, 256, 256) raw previous low-res logits (any values if unused);
        has_mask_input: (1,) float32, 1 -> `mask_downscaling(mask_input)`, 0 -> `no_mask_embed`.
        """
        if tuple(mask_input.shape[-2:]) != (LOW_RES_MASK, LOW_RES_MASK):
            raise ValueError(f"mask_input must be (1, 1, {LOW_RES_MASK}, {LOW_RES_MASK}), "
                             f"got {tuple(mask_input.shape)}")
        has = has_mask_input.reshape(-1, 1, 1, 1)
        return has * self.mask_downscaling(mask_input) + (1 - has) * self.no_mask_dense()

    def no_mask_dense(self) -> torch.Tensor:
        """`no_mask_embed` broadcast to (1, 256, 64, 64): the first click's dense prompt."""
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            1, -1, EMBED_GRID, EMBED_GRID)

    def grid_pe(self) -> torch.Tensor:
        """Constant positional encoding of the 64x64 embedding grid: (1, 256, 64, 64)."""
        return self.pos_embed_layer.grid_pe(EMBED_GRID)
