"""SAM mask decoder (upstream `SAMDecoder` / `SAMDecoderForRefiner`, FocSAM `decode_head.*`), §4.

Two output modes: `forward` gives all 4 masks, the IoU predictions and all 4 mask tokens;
`forward_single` gives mask 0 and its token only (the "single mask with token" mode), skipping
hypernetwork MLPs 1..3. Every output token stays in the sequence since all attend to each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from focsam_onnx.config import EMBED_GRID, NUM_MASK_TOKENS, PROMPT_DIM
from focsam_onnx.models.image_encoder import LayerNorm2d
from focsam_onnx.models.transformer import TwoWayTransformer


def _subpixel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d weight (in, out, 2, 2) -> (in, 2*2*out), columns ordered (a, b, out)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


class MLP(nn.Module):
    """`num_layers` Linear layers (`layers.{i}`) with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Image embeddings + prompt embeddings -> 256x256 mask logits (spec §4.1, §4.3)."""

    def __init__(self, dim: int = PROMPT_DIM, num_mask_tokens: int = NUM_MASK_TOKENS,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(depth=2, dim=dim, num_heads=8, mlp_dim=2048)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, num_mask_tokens, iou_head_depth)

    def _run_transformer(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                         sparse: torch.Tensor,
                         dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (token outputs (1, 5 + N, 256), image tokens (1, 4096, 256), row-major 64x64)."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse],
                           dim=1)
        return self.transformer(image_embeddings + dense, image_pe, tokens)

    def _upscale(self, keys: torch.Tensor) -> torch.Tensor:
        """Image tokens (1, 4096, 256) -> upscaled map (1, 32, 256, 256)."""
        grid = EMBED_GRID
        return self.output_upscaling(keys.transpose(1, 2).reshape(1, -1, grid, grid))

    def _mask0(self, keys: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """`_masks(hyper_in, _upscale(keys))` for one mask, computed channels-last.

        A transposed conv with kernel 2 and stride 2 writes each input pixel to its own 2x2
        output block, so it is one per-pixel matmul to 4 sub-pixels. Staying channels-last, the
        LayerNorm2d becomes a plain LayerNorm and only the final one-channel map is pixel-
        shuffled: no (1, 32, 256, 256) map is ever laid out (cheaper in onnxruntime).
        keys: (1, 4096, 256); hyper_in: (1, 1, 32) -> (1, 1, 256, 256).
        """
        up1, norm, _, up2, _ = self.output_upscaling
        x = keys @ _subpixel_matrix(up1.weight) + up1.bias.repeat(4)  # (1, 4096, 2*2*64)
        x = x.unflatten(-1, (4, -1))  # (1, 4096, (a, b), 64): output pixel (2i + a, 2j + b)
        x = F.gelu(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = F.gelu(x @ _subpixel_matrix(up2.weight) + up2.bias.repeat(4))  # (.., (a2, b2) * 32)
        mask = x.unflatten(-1, (4, -1)) @ hyper_in.reshape(-1, 1)  # (1, 4096, 4, 4, 1)
        grid = EMBED_GRID
        # [i, j, a, b, a2, b2] -> pixel (4i + 2a + a2, 4j + 2b + b2)
        mask = mask.reshape(grid, grid, 2, 2, 2, 2).permute(0, 2, 4, 1, 3, 5)
        return mask.reshape(1, 1, 4 * grid, 4 * grid)

    @staticmethod
    def _masks(hyper_in: torch.Tensor, upscaled: torch.Tensor) -> torch.Tensor:
        """hyper_in: (1, M, 32); upscaled: (1, 32, 256, 256) -> (1, M, 256, 256)."""
        b, c, h, w = upscaled.shape
        return (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse: torch.Tensor,
                dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All outputs.

        image_embeddings, image_pe, dense: (1, 256, 64, 64); sparse: (1, N+1, 256).
        Returns (masks (1, 4, 256, 256), iou_predictions (1, 4), mask_tokens (1, 4, 256)).
        """
        hs, keys = self._run_transformer(image_embeddings, image_pe, sparse, dense)
        mask_tokens = hs[:, 1:1 + len(self.output_hypernetworks_mlps)]
        hyper_in = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1)
        masks = self._masks(hyper_in, self._upscale(keys))
        return masks, self.iou_prediction_head(hs[:, 0]), mask_tokens

    def forward_single(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                       sparse: torch.Tensor,
                       dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask 0 only ("single mask with token"); same inputs as `forward`.

        Returns (low_res_masks (1, 1, 256, 256), mask_token (1, 1, 256) = transformer output of
        the first mask token after norm_final_attn, iou_predictions (1, 4)).
        """
        hs, keys = self._run_transformer(image_embeddings, image_pe, sparse, dense)
        mask_token = hs[:, 1:2]
        hyper_in = self.output_hypernetworks_mlps[0](mask_token)
        return self._mask0(keys, hyper_in), mask_token, self.iou_prediction_head(hs[:, 0])
