"""Training-time forward passes of the FocSAM modules for a batch of objects of one image.

The exported model (models/focsam.py) decodes one prompt at a time; training decodes the K
objects of a scene at once against the same image embedding. These functions call the very
submodules the export uses (same parameters), batched, plus a differentiable DCN: the model's
deform-conv custom op has no backward, so `make_trainable` points each DCN at the plain-torch
operator it wraps (the same maths).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch import nn

from focsam_onnx.config import EMBED_GRID
from focsam_onnx.models.deform_conv import ModulatedDeformConv3x3, modulated_deform_conv3x3
from focsam_onnx.models.focsam import FocSAM
from focsam_onnx.models.prompt_encoder import sparse_points


def _plain_dcn(self: ModulatedDeformConv3x3, x: torch.Tensor, offset: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    return modulated_deform_conv3x3(x, offset, mask, self.weight)


def make_trainable(model: FocSAM) -> FocSAM:
    """Switch every DCN of `model` to the autograd-friendly operator, in place; returns it."""
    for module in model.modules():
        if isinstance(module, ModulatedDeformConv3x3):
            module.forward = types.MethodType(_plain_dcn, module)
    return model


def decode_batch(model: FocSAM, embeddings: torch.Tensor, grid_pe: torch.Tensor,
                 coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None,
                 box: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`FocSAM.decode` for K prompts at once ("single mask with token"), each on its own view.

    embeddings: (1 or K, 256, s, s) of the objects' views; grid_pe: (1 or K, 256, s, s) their
    positional encodings (`view_pe`); coords: (K, N, 2) float32 (x, y) in the 1024 frame,
    without +0.5; labels: (K, N) 1/0; mask_input: (K, 1, 4s, 4s) previous logits of the views,
    or None; box: (K, 4) (x0, y0, x1, y1) in the 1024 frame, or None.
    Returns (logits (K, 1, 4s, 4s), mask_token (K, 1, 256), iou_predictions (K, 4)).
    """
    k, s = coords.shape[0], embeddings.shape[-1]
    sparse = model.neck.embed_points(*sparse_points(coords, labels, box))
    if mask_input is None:
        dense = model.neck.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(k, -1, s, s)
    else:
        dense = model.neck.mask_downscaling(mask_input)
    head = model.decode_head
    hs, keys = head._run_transformer(embeddings.expand(k, -1, -1, -1), grid_pe, sparse, dense)
    upscaled = head.output_upscaling(keys.transpose(1, 2).reshape(k, -1, s, s))
    mask_token = hs[:, 1:2]
    hyper = head.output_hypernetworks_mlps[0](mask_token[:, 0])  # (K, 32)
    logits = torch.einsum("kc,kchw->khw", hyper, upscaled).unsqueeze(1)
    return logits, mask_token, head.iou_prediction_head(hs[:, 0])


def view_pe(model: FocSAM, view: View) -> torch.Tensor:
    """The grid positional encodings of `view`'s tokens: (1, 256, s, s)."""
    s = view.size
    return model.neck.grid_pe()[:, :, view.row:view.row + s, view.col:view.col + s]


@dataclass(frozen=True)
class View:
    """A square window of the 64x64 token grid: top-left token (row, col) and side `size`.

    Training mostly runs on a crop of the 1024 canvas: the crop's tokens get the absolute
    position embeddings, relative-position rows and grid positional encodings they have on the
    full canvas, so a crop is the full model seen through a window (attention then spans the
    crop only). `View.FULL` is the canvas itself, the exported computation.
    """

    row: int = 0
    col: int = 0
    size: int = EMBED_GRID

    @property
    def is_full(self) -> bool:
        return self.size == EMBED_GRID

    def pixels(self, patch: int) -> tuple[slice, slice]:
        """(rows, cols) of the view on a canvas with `patch` pixels per token."""
        return (slice(self.row * patch, (self.row + self.size) * patch),
                slice(self.col * patch, (self.col + self.size) * patch))


View.FULL = View()  # type: ignore[attr-defined]


def _global_attend(attn: nn.Module, qkv: torch.Tensor) -> torch.Tensor:
    """`Attention.attend` of a global block on a crop of the grid: qkv (1, s, s, 3D) -> (1, s, s,
    D). The relative-position rows are those of the crop's offsets on the full table."""
    b, h, w, _ = qkv.shape
    heads, dim = attn.num_heads, attn.head_dim
    q, k, v = qkv.reshape(b, h * w, 3, heads, dim).permute(2, 0, 3, 1, 4).reshape(
        3, b * heads, h * w, dim).unbind(0)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    offsets = torch.arange(h)
    index = offsets[:, None] - offsets[None, :] + (attn.grid_size - 1)
    r_q = q.reshape(b * heads, h, w, dim)
    rel_h = torch.einsum("nhwc,hkc->nhwk", r_q, attn.rel_pos_h[index])
    rel_w = torch.einsum("nhwc,wkc->nhwk", r_q, attn.rel_pos_w[index])
    logits = logits.view(-1, h, w, h, w) + rel_h[..., None] + rel_w[:, :, :, None, :]
    weights = logits.view(-1, h * w, h * w).softmax(dim=-1)
    out = (weights @ v).view(b, heads, h, w, dim)
    return out.permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)


def encode_view(model: FocSAM, image: torch.Tensor, view: View) -> torch.Tensor:
    """image: (1, 3, 1024, 1024) canvas -> embeddings (1, 256, s, s) of the view's tokens."""
    return encode_views(model, [image], [view])


def encode_views(model: FocSAM, images: list[torch.Tensor], views: list[View]) -> torch.Tensor:
    """Canvases (1, 3, 1024, 1024) seen through views of one size -> (B, 256, s, s), one pass.

    Global blocks and the MLPs run on the whole batch; a windowed block runs per view, since
    its windows tile each view from the view's own corner.
    """
    if len(views) == 1 and views[0].is_full:
        return model.encode(images[0])
    encoder = model.backbone
    crops = []
    for image, view in zip(images, views):
        rows, cols = view.pixels(encoder.cfg.patch_size)
        crops.append(encoder.pos_embed[:, view.row:view.row + view.size,
                                       view.col:view.col + view.size]
                     + encoder.patch_embed(image[:, :, rows, cols]))
    x = torch.cat(crops)
    for block in encoder.blocks:
        if block.window_size > 0:
            x = torch.cat([block(x[i:i + 1]) for i in range(x.shape[0])])
            continue
        x = x + block.attn.proj(_global_attend(block.attn, block.attn.qkv(block.norm1(x))))
        x = x + block.mlp(block.norm2(x))
    return encoder.neck(x.permute(0, 3, 1, 2))
