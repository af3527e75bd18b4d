"""One control-flow-free torch module per ONNX graph, with its example and parity inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from focsam_onnx.config import EMBED_GRID, IMAGE_SIZE
from focsam_onnx.engine.graph_spec import DECODER, ENCODER, REFINER, GraphSpec, TensorSpec
from focsam_onnx.export.custom_ops import DEFORM_CONV_OPSET
from focsam_onnx.export.decoder_rewrites import rewrite_decoder
from focsam_onnx.export.parity import ParityCase
from focsam_onnx.export.refiner_rewrites import rewrite_refiner
from focsam_onnx.models.focsam import FocSAM


@dataclass(frozen=True)
class GraphExport:
    """What to export for one graph and how to check it."""

    spec: GraphSpec
    module: nn.Module  # the truth: the parity gate checks the graph against it
    example_inputs: tuple[torch.Tensor, ...]
    cases: list[ParityCase]  # checked against each output's tolerance in the spec
    min_opset: int = 0
    traced: nn.Module | None = None  # what is exported when not `module` (an exact rewrite)

    @property
    def exported(self) -> nn.Module:
        return self.module if self.traced is None else self.traced


class EncoderGraph(nn.Module):
    def __init__(self, model: FocSAM):
        super().__init__()
        self.backbone = model.backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder behind the de-facto SAM ONNX interface.

    The caller builds the point list (clicks, then box corners labelled 2 / 3 or the padding
    point); `has_mask_input` blends the dense prompt without a branch. The image grid's
    positional encoding is a constant of the graph.
    """

    def __init__(self, model: FocSAM, decode_head: nn.Module | None = None):
        super().__init__()
        self.neck = model.neck
        self.decode_head = model.decode_head if decode_head is None else decode_head
        with torch.no_grad():
            self.register_buffer("grid_pe", model.neck.grid_pe().clone(), persistent=False)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor, mask_input: torch.Tensor,
                has_mask_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sparse = self.neck.embed_points(point_coords, point_labels)
        dense = self.neck.embed_mask(mask_input, has_mask_input)
        return self.decode_head.forward_single(image_embeddings, self.grid_pe, sparse, dense)


class RefinerGraph(nn.Module):
    def __init__(self, refine_head: nn.Module):
        super().__init__()
        self.refine_head = refine_head

    def forward(self, image_embeddings: torch.Tensor, mask_token: torch.Tensor,
                roi_mask: torch.Tensor) -> torch.Tensor:
        return self.refine_head(image_embeddings, mask_token, roi_mask)


def graph_exports(model: FocSAM) -> list[GraphExport]:
    """The graphs of `model`: encoder, decoder and, unless plain SAM, the refiner (rewritten)."""
    gen = torch.Generator().manual_seed(0)
    graphs = [_encoder(model, gen), decoder_export(model, gen=gen)]
    if model.refine_head is not None:
        graphs.append(refiner_export(model, gen=gen))
    return graphs


def _random(tensor: TensorSpec, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Standard-normal values of a static tensor spec's shape, times `scale`."""
    return torch.randn(tensor.shape, generator=gen) * scale


def _encoder(model: FocSAM, gen: torch.Generator) -> GraphExport:
    (image_spec,) = ENCODER.inputs
    image = _random(image_spec, gen)
    return GraphExport(ENCODER, EncoderGraph(model).eval(), (image,),
                       [ParityCase("random image", (image,))])


def _points(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random clicks in the 1024 frame plus the caller-appended padding point."""
    coords = torch.cat([torch.rand(1, n, 2, generator=gen) * (IMAGE_SIZE - 1),
                        torch.zeros(1, 1, 2)], 1)
    labels = torch.cat([(torch.rand(1, n, generator=gen) > 0.3).float(), -torch.ones(1, 1)], 1)
    return coords, labels


def _box_points(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random clicks then a random box's corners (labels 2, 3), no padding point."""
    coords, labels = _points(n, gen)
    corners = torch.sort(torch.rand(1, 2, 2, generator=gen) * 1023, dim=1).values
    return (torch.cat([coords[:, :n], corners], 1),
            torch.cat([labels[:, :n], torch.tensor([[2.0, 3.0]])], 1))


def decoder_export(model: FocSAM, rewrite: bool = True,
                   gen: torch.Generator | None = None) -> GraphExport:
    """The decoder graph, checked against `model`'s decoder as written in models/; exported as
    its exact rewrite (`decoder_rewrites.py`) unless `rewrite` is False (for comparisons)."""
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    embeddings_spec, _, _, mask_spec, _ = DECODER.inputs
    embeddings = _random(embeddings_spec, gen)
    logits = _random(mask_spec, gen, scale=4.0)
    yes, no = torch.ones(1), torch.zeros(1)
    cases = [
        ParityCase("1 click, no mask", (embeddings, *_points(1, gen), logits, no)),
        ParityCase("3 clicks, mask", (embeddings, *_points(3, gen), logits, yes)),
        ParityCase("8 clicks, mask", (embeddings, *_points(8, gen), logits, yes)),
        ParityCase("20 clicks, no mask", (embeddings, *_points(20, gen), logits, no)),
        ParityCase("box, no mask", (embeddings, *_box_points(0, gen), logits, no)),
        ParityCase("box + 2 clicks, mask", (embeddings, *_box_points(2, gen), logits, yes)),
    ]
    traced = DecoderGraph(model, rewrite_decoder(model.decode_head)).eval() if rewrite else None
    return GraphExport(DECODER, DecoderGraph(model).eval(), cases[1].inputs, cases,
                       traced=traced)


def _token_mask(rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(REFINER.inputs[2].shape)
    mask[..., rows, cols] = 1.0
    return mask


def refiner_export(model: FocSAM, rewrite: bool = True,
                   gen: torch.Generator | None = None) -> GraphExport:
    """The refiner graph, checked against `model`'s refiner as written in models/; exported as
    its exact rewrite (`refiner_rewrites.py`) unless `rewrite` is False (for comparisons)."""
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    embeddings_spec, token_spec, _ = REFINER.inputs
    embeddings = _random(embeddings_spec, gen)
    token = _random(token_spec, gen)
    grid = EMBED_GRID
    rois = {
        "small ROI": _token_mask(slice(20, 26), slice(21, 27)),
        "border ROI": _token_mask(slice(grid - 12, grid), slice(grid - 14, grid)),
        "middle ROI": _token_mask(slice(10, 40), slice(18, 47)),
        "full canvas": _token_mask(slice(0, grid), slice(0, grid)),
        "empty ROI": _token_mask(slice(0, 0), slice(0, 0)),
    }
    cases = [ParityCase(name, (embeddings, token, roi)) for name, roi in rois.items()]
    reference = RefinerGraph(model.refine_head).eval()
    traced = RefinerGraph(rewrite_refiner(model.refine_head)).eval() if rewrite else None
    return GraphExport(REFINER, reference, cases[2].inputs, cases, min_opset=DEFORM_CONV_OPSET,
                       traced=traced)
