"""The ONNX graphs' contract, written once: tensor names, shapes, dtypes and parity tolerances.

The exporter names the graphs' tensors from these specs, builds its example inputs from them
and gates each output on its tolerance; the engine feeds the graphs by the same names and holds
every opened session against its spec. The decoder keeps the de-facto SAM ONNX names so that
other SAM tools can drive it. String dimensions are dynamic axes. Sizes come from the network's
fixed frame in `focsam_onnx.config`. The encoder precisions (`PRECISIONS`) are part of the
contract too: which graph file each precision runs and on which runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from focsam_onnx.config import EMBED_GRID, IMAGE_SIZE, LOW_RES_MASK, PROMPT_DIM
from focsam_onnx.errors import DamagedData, InvalidInput

Dim = int | str

EMBEDDING_SHAPE = (1, PROMPT_DIM, EMBED_GRID, EMBED_GRID)
LOW_RES_SHAPE = (1, 1, LOW_RES_MASK, LOW_RES_MASK)
TOKEN_GRID_SHAPE = (1, 1, EMBED_GRID, EMBED_GRID)
NETWORK_INPUT_SHAPE = (1, 3, IMAGE_SIZE, IMAGE_SIZE)

# onnxruntime's names for the element types the graphs use.
ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


class GraphContractError(DamagedData):
    """A graph's inputs or outputs do not match its spec."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    # Outputs: the max abs ORT-vs-torch difference the parity gate accepts; the golden
    # reference's tolerance for this tensor (../shared/golden/README.md §8), set there for
    # values up to `scale`, the largest |value| of the tensor in that reference.
    tolerance: float | None = None
    scale: float | None = None

    def allowed_diff(self, largest: float) -> float:
        """The gate's bound when the reference output's largest |value| is `largest`: the
        tolerance up to the golden scale, in proportion above it, since float32 rounding grows
        with the values rounded (a trained model's logits are tens of times the fixture's)."""
        return self.tolerance * max(1.0, largest / self.scale)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with each dynamic axis replaced by `sizes[axis name]`."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def matches(self, shape: tuple[int, ...]) -> bool:
        """Same rank and the same size on every static axis."""
        return len(shape) == len(self.shape) and all(
            isinstance(d, str) or d == n for d, n in zip(self.shape, shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


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

    def example_inputs(self, rng: np.random.Generator,
                       sizes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """Standard-normal inputs of the spec's shapes (dynamic axes from `sizes`, default 3)."""
        sizes = {d: 3 for t in self.inputs for d in t.dynamic_axes.values()} | dict(sizes or {})
        return {t.name: rng.standard_normal(t.concrete_shape(sizes)).astype(t.dtype)
                for t in self.inputs}

    def check_session(self, session, where: str) -> None:
        """Hold an onnxruntime session's inputs and outputs against this spec: names and
        order, ranks, static dims and dtypes. Raises GraphContractError naming the tensor."""
        for kind, expected, actual in (("input", self.inputs, session.get_inputs()),
                                       ("output", self.outputs, session.get_outputs())):
            names = [a.name for a in actual]
            if names != [t.name for t in expected]:
                raise GraphContractError(f"{where}: {self.name} graph has {kind}s {names}, "
                                         f"expected {[t.name for t in expected]}")
            for spec, arg in zip(expected, actual):
                _check_tensor(spec, arg, f"{where}: {self.name} {kind} {spec.name!r}")

    def to_dict(self) -> dict:
        return {"file": self.filename, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


def _check_tensor(spec: TensorSpec, arg, where: str) -> None:
    if arg.type != ORT_TYPES[spec.dtype]:
        raise GraphContractError(f"{where} has type {arg.type}, expected {ORT_TYPES[spec.dtype]}")
    shape = list(arg.shape)
    if len(shape) != len(spec.shape):
        raise GraphContractError(f"{where} has rank {len(shape)} {shape}, expected "
                                 f"{len(spec.shape)} {list(spec.shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if isinstance(want, int) and got != want:
            raise GraphContractError(f"{where} has size {got} on axis {axis}, expected {want} "
                                     f"(shape {shape}, spec {list(spec.shape)})")


EMBEDDINGS = TensorSpec("image_embeddings", EMBEDDING_SHAPE, tolerance=1e-4, scale=4.7)

ENCODER = GraphSpec(
    "encoder",
    "encoder.onnx",
    # Normalised, /32-padded, resized and padded, channel order B, G, R.
    inputs=(TensorSpec("image", NETWORK_INPUT_SHAPE),),
    outputs=(EMBEDDINGS,),
)

DECODER = GraphSpec(
    "decoder",
    "decoder.onnx",
    inputs=(
        EMBEDDINGS,
        # (x, y) in the resized 1024 frame without the +0.5; the caller appends the box corners
        # or (no box) the padding point.
        TensorSpec("point_coords", (1, "num_points", 2)),
        # 1 positive, 0 negative, 2 / 3 box top-left / bottom-right, -1 padding
        TensorSpec("point_labels", (1, "num_points")),
        TensorSpec("mask_input", LOW_RES_SHAPE),  # previous low-res logits
        TensorSpec("has_mask_input", (1,)),  # 1: use mask_input; 0: the no-mask embedding
    ),
    outputs=(
        TensorSpec("low_res_masks", LOW_RES_SHAPE, tolerance=1e-5, scale=0.42),  # token 0's logits
        # That token's transformer output (the refiner's input).
        TensorSpec("mask_token", (1, 1, PROMPT_DIM), tolerance=1e-4, scale=3.4),
        TensorSpec("iou_predictions", (1, 4), tolerance=1e-5, scale=0.13),
    ),
)

REFINER = GraphSpec(
    "refiner",
    "refiner.onnx",
    inputs=(
        EMBEDDINGS,  # the original (unrefined) embeddings
        TensorSpec("mask_token", (1, 1, PROMPT_DIM)),
        TensorSpec("roi_mask", TOKEN_GRID_SHAPE),  # 0/1 token mask from the coarse logits
    ),
    outputs=(TensorSpec("refined_embeddings", EMBEDDING_SHAPE, tolerance=5e-4, scale=6.8),),
)

GRAPHS: tuple[GraphSpec, ...] = (ENCODER, DECODER, REFINER)

# The SAM-compatible pair (`export --sam-compatible`): the interface segment-anything's ONNX
# export, samexporter and X-AnyLabeling speak. Not opened by the click engine.
SAM_ENCODER = GraphSpec(
    "sam_encoder",
    "sam_encoder.onnx",
    # (h, w, 3) float32 R, G, B in 0..255, the client's resize: longest side exactly 1024.
    inputs=(TensorSpec("input_image", ("image_height", "image_width", 3)),),
    outputs=(EMBEDDINGS,),
)

SAM_DECODER = GraphSpec(
    "sam_decoder",
    "sam_decoder.onnx",
    inputs=(*DECODER.inputs, TensorSpec("orig_im_size", (2,))),  # (H, W) of the image
    outputs=(
        # All 4 mask tokens' logits at orig_im_size, as segment-anything's own export gives.
        TensorSpec("masks", (1, 4, "orig_height", "orig_width"), tolerance=1e-4, scale=0.42),
        TensorSpec("iou_predictions", (1, 4), tolerance=1e-5, scale=0.13),
        TensorSpec("low_res_masks", (1, 4, LOW_RES_MASK, LOW_RES_MASK), tolerance=1e-5,
                   scale=0.42),
    ),
)

SAM_PAIR: tuple[GraphSpec, ...] = (SAM_ENCODER, SAM_DECODER)
GRAPHS_BY_NAME: dict[str, GraphSpec] = {g.name: g for g in (*GRAPHS, *SAM_PAIR)}


# The encoder at each precision (the click graphs have their own, `CLICK_PRECISIONS`). bf16
# runs the fp32 graph through OpenVINO; int8 runs the dynamically quantized graph. An export
# offers a reduced one once its gate passed.
DEFAULT_PRECISION = "fp32"


@dataclass(frozen=True)
class Precision:
    name: str
    filename: str  # the graph file this precision runs
    runtime: str  # "onnxruntime" or "openvino"


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", ENCODER.filename, "onnxruntime"),
    Precision("bf16", ENCODER.filename, "openvino"),
    Precision("int8", "encoder.int8.onnx", "onnxruntime"),
)}


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise InvalidInput(f"encoder precision must be one of {sorted(PRECISIONS)}, "
                           f"got {name!r}")
    return PRECISIONS[name]


# The click graphs (decoder and refiner) at each precision -> their runtime: fp32 on onnxruntime
# (exact), bf16 through OpenVINO (engine/click_runtime.py), offered once its click-replay gate
# passed (export/click_gate.py).
CLICK_PRECISIONS: dict[str, str] = {"fp32": "onnxruntime", "bf16": "openvino"}


def get_click_precision(name: str) -> str:
    """The runtime of click precision `name`; InvalidInput for an unknown one."""
    if name not in CLICK_PRECISIONS:
        raise InvalidInput(f"click precision must be one of {sorted(CLICK_PRECISIONS)}, "
                           f"got {name!r}")
    return CLICK_PRECISIONS[name]
