"""Model hyper-parameters and the network's fixed frame: frozen dataclasses, one variant table.

Pure Python, at the package root because every layer reads it: the torch model (models/), the
exporter, and the engine, which must import neither models/ nor torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from focsam_onnx.errors import InvalidInput

IMAGE_SIZE = 1024  # the padded square canvas the encoder sees
PROMPT_DIM = 256  # prompt / embedding width C
EMBED_GRID = 64  # IMAGE_SIZE // patch size: the 64x64 token grid
LOW_RES_MASK = 256  # decoder logits are 256x256 for the 1024 canvas
NUM_MASK_TOKENS = 4  # SAM's single-output token 0 + 3 multimask tokens

# The decoder's exact attention rewrites (export/decoder_rewrites.py) fold the image-side
# projections into the token side while the two-way transformer carries at most this many
# tokens: the IoU token, the mask tokens and the prompt points (padding included). Image-side
# projections cost 2 * 4096 * 256 * 128 multiply-adds per attention plus 2 * 4096 * 128 * T for
# the attention itself; the folded order costs 2 * 4096 * 256 * 8T: equal at
# T = 256 * 128 / (8 * 256 - 128) = 17.07, and onnxruntime ran the folded graph slower from
# T = 17 on. The exported decoder picks the order at run time (ONNX `If`s on the token count).
FOLD_MAX_TOKENS = 16
FOLD_MAX_POINTS = FOLD_MAX_TOKENS - 1 - NUM_MASK_TOKENS


@dataclass(frozen=True)
class EncoderConfig:
    """SAM ViT image encoder (upstream `SAMWindowViT`)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    mlp_ratio: float = 4.0
    out_chans: int = PROMPT_DIM
    layer_norm_eps: float = 1e-5  # upstream FocSAM quirk; official SAM uses 1e-6


@dataclass(frozen=True)
class RefinerConfig:
    """Focus refiner (upstream `FocusRefiner`); `depth` blocks alternate plain/shifted."""

    depth: int = 12
    embed_dim: int = PROMPT_DIM
    num_heads: int = 8
    mlp_ratio: float = 4.0
    window_size: int = 16
    expand_ratio: tuple[float, float] = (1.4, 1.4)  # (h, w) ROI bbox expansion at test time


@dataclass(frozen=True)
class FocSAMConfig:
    """A whole model. `refiner is None` means plain SAM (official checkpoint, no refiner)."""

    variant: str
    encoder: EncoderConfig
    refiner: RefinerConfig | None = RefinerConfig()

    @property
    def is_plain_sam(self) -> bool:
        return self.refiner is None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FocSAMConfig:
        """The inverse of `to_dict`; raises ValueError naming the first field that is wrong."""
        encoder = _dataclass_from_dict(EncoderConfig, data.get("encoder"), "config.encoder")
        refiner = data.get("refiner")
        if refiner is not None:
            refiner = _dataclass_from_dict(RefinerConfig, refiner, "config.refiner")
        variant = data.get("variant")
        if not isinstance(variant, str):
            raise InvalidInput(f"config.variant must be a string, got {variant!r}")
        return cls(variant, encoder, refiner)

    def as_plain_sam(self) -> FocSAMConfig:
        """The same backbone as official SAM builds it: LN eps 1e-6, no refiner."""
        encoder = dataclasses.replace(self.encoder, layer_norm_eps=1e-6)
        return FocSAMConfig(variant=self.variant, encoder=encoder, refiner=None)


VARIANTS: dict[str, FocSAMConfig] = {
    # The golden fixture (../shared/golden/tiny_focsam_config.json).
    "tiny": FocSAMConfig(
        "tiny", EncoderConfig(embed_dim=64, depth=4, num_heads=2, global_attn_indexes=(1, 3)),
        RefinerConfig(depth=2),
    ),
    # Official SAM backbones; refiner depth 12 / window 16 as in the released FocSAM.
    "vit_b": FocSAMConfig(
        "vit_b", EncoderConfig(embed_dim=768, depth=12, num_heads=12,
                               global_attn_indexes=(2, 5, 8, 11)),
    ),
    "vit_l": FocSAMConfig(
        "vit_l", EncoderConfig(embed_dim=1024, depth=24, num_heads=16,
                               global_attn_indexes=(5, 11, 17, 23)),
    ),
    "vit_h": FocSAMConfig(
        "vit_h", EncoderConfig(embed_dim=1280, depth=32, num_heads=16,
                               global_attn_indexes=(7, 15, 23, 31)),
    ),
}


def _dataclass_from_dict(kind: type, data: object, where: str):
    """`kind(**data)` with tuples restored from JSON lists and every field checked."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} must be an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {unknown}")
    values = {}
    for name, value in data.items():
        default = fields[name].default
        if isinstance(default, tuple) or fields[name].type.startswith("tuple"):
            if not isinstance(value, (list, tuple)):
                raise InvalidInput(f"{where}.{name} must be a list, got {value!r}")
            value = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{where}.{name} must be a number, got {value!r}")
        values[name] = value
    try:
        return kind(**values)
    except TypeError as err:  # a required field is missing
        raise InvalidInput(f"{where}: {err}") from None


VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)


def get_variant(name: str) -> FocSAMConfig:
    try:
        return VARIANTS[name]
    except KeyError:
        raise InvalidInput(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}") from None
