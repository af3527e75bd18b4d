"""The three ONNX graphs' input/output names and shapes, written once.

The exporter names the graphs' tensors from these specs and the engine feeds them by the same
names. The decoder keeps the de-facto SAM ONNX names so that other SAM tools can drive it.
String dimensions are dynamic axes.
"""

from __future__ import annotations

from dataclasses import dataclass

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    filename: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict:
        def tensors(ts: tuple[TensorSpec, ...]) -> list[dict]:
            return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in ts]

        return {"file": self.filename, "inputs": tensors(self.inputs),
                "outputs": tensors(self.outputs)}


EMBEDDINGS = TensorSpec("image_embeddings", (1, 256, 64, 64))

ENCODER = GraphSpec(
    "encoder",
    "encoder.onnx",
    # (1, 3, 1024, 1024): normalised, /32-padded, resized and padded, channel order B, G, R.
    inputs=(TensorSpec("image", (1, 3, 1024, 1024)),),
    outputs=(EMBEDDINGS,),
)

DECODER = GraphSpec(
    "decoder",
    "decoder.onnx",
    inputs=(
        EMBEDDINGS,
        # (x, y) in the resized 1024 frame without the +0.5; the caller appends the padding point.
        TensorSpec("point_coords", (1, "num_points", 2)),
        TensorSpec("point_labels", (1, "num_points")),  # 1 positive, 0 negative, -1 padding
        TensorSpec("mask_input", (1, 1, 256, 256)),  # previous low-res logits
        TensorSpec("has_mask_input", (1,)),  # 1: use mask_input; 0: the no-mask embedding
    ),
    outputs=(
        TensorSpec("low_res_masks", (1, 1, 256, 256)),  # mask token 0's logits
        TensorSpec("mask_token", (1, 1, 256)),  # that token's transformer output (refiner input)
        TensorSpec("iou_predictions", (1, 4)),
    ),
)

REFINER = GraphSpec(
    "refiner",
    "refiner.onnx",
    inputs=(
        EMBEDDINGS,  # the original (unrefined) embeddings
        TensorSpec("mask_token", (1, 1, 256)),
        TensorSpec("roi_mask", (1, 1, 64, 64)),  # 0/1 token mask from the coarse logits
    ),
    outputs=(TensorSpec("refined_embeddings", (1, 256, 64, 64)),),
)

GRAPHS: tuple[GraphSpec, ...] = (ENCODER, DECODER, REFINER)
