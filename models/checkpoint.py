"""Checkpoint loading (spec §8): safe reading, kind + variant detection, strict matching.

Accepted files (all read with `torch.load(weights_only=True)`: no pickled code ever runs):

* **official SAM** `.pth` (`sam_vit_{b,l,h}_*.pth`): a plain dict with `image_encoder.` /
  `prompt_encoder.` / `mask_decoder.` keys. Renamed with upstream's converter rules (§8.2) and
  built as plain SAM: `config.as_plain_sam()`, ViT LayerNorm eps 1e-6, no refiner.
* **FocSAM** files: an mmengine dict holding `state_dict`, else `model`, else the bare dict;
  a leading `module.` is stripped; prefixes `backbone.`, `neck.`, `decode_head.`,
  `refine_head.`. Converted SAM files (`samvit2mmclickseg.py`) and merged files
  (`merge_weights.py`) are of this kind too. Without `refine_head.*` keys the model has no
  refiner but keeps the FocSAM ViT LayerNorm eps 1e-5: that is how upstream FocSAM runs such a
  file (its `SAMWindowViT` always uses 1e-5). `layer_norm_eps=1e-6` reproduces official SAM.

Loading is strict: every key the detected architecture expects, with its shape, and nothing
else; otherwise `CheckpointError` names the offending keys and the detected kind.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import torch

from focsam_onnx.config import (
    EMBED_GRID,
    VARIANTS,
    EncoderConfig,
    FocSAMConfig,
    RefinerConfig,
)
from focsam_onnx.errors import InvalidInput
from focsam_onnx.models.focsam import FocSAM, build_model

CheckpointKind = Literal["official_sam", "focsam"]

# Upstream converter (samvit2mmclickseg.py): official prefix -> FocSAM prefix.
OFFICIAL_TO_FOCSAM_PREFIX = {
    "image_encoder.": "backbone.",
    "prompt_encoder.": "neck.",
    "mask_decoder.": "decode_head.",
}
# Extra substring renames the converter applies inside prompt_encoder keys only.
PROMPT_ENCODER_RENAMES = (("pe_layer", "pos_embed_layer"), ("point_embeddings", "point_embeds"))
FOCSAM_PREFIXES = ("backbone.", "neck.", "decode_head.", "refine_head.")
WRAPPER_KEYS = ("state_dict", "model")  # mmengine / other trainers, tried in this order
_SHOW = 5  # keys listed per problem in an error message
_BLOCK_KEY = re.compile(r"^(backbone|refine_head)\.blocks\.(\d+)\.")


class CheckpointError(InvalidInput):
    """The file is not a usable FocSAM / SAM checkpoint; the message says why."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What `load_checkpoint` found: the file's kind, the detected config, its tensor count."""

    kind: CheckpointKind
    config: FocSAMConfig
    num_tensors: int


def official_to_focsam_key(key: str) -> str:
    """`image_encoder.x` -> `backbone.x` etc. (converter rules, §8.2); ValueError if unknown."""
    for old, new in OFFICIAL_TO_FOCSAM_PREFIX.items():
        if key.startswith(old):
            rest = key[len(old):]
            if new == "neck.":
                for a, b in PROMPT_ENCODER_RENAMES:
                    rest = rest.replace(a, b)
            return new + rest
    raise ValueError(f"{key!r} has no official SAM prefix {tuple(OFFICIAL_TO_FOCSAM_PREFIX)}")


def focsam_to_official_key(key: str) -> str:
    """Inverse of `official_to_focsam_key`; ValueError for `refine_head.*` (not in SAM)."""
    for old, new in OFFICIAL_TO_FOCSAM_PREFIX.items():
        if key.startswith(new):
            rest = key[len(new):]
            if new == "neck.":
                for a, b in PROMPT_ENCODER_RENAMES:
                    rest = rest.replace(b, a)
            return old + rest
    raise ValueError(f"{key!r} has no official SAM counterpart")


def _torch_load_detail(error: Exception) -> str:
    """The informative line of a torch.load error (its weights_only text is mostly boilerplate)."""
    text = str(error)
    match = re.search(r"(Unsupported operand \S+|Trying to load unsupported GLOBAL [^\n]*|"
                      r"Unsupported global: [^\n]*)", text)
    if match:
        return match.group(1).strip()
    return text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__


class _Inert:
    """Stands in for a foreign object of a training checkpoint; none of its code ever runs."""

    def __new__(cls, *args: object, **kwargs: object) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


_FOREIGN_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_MAX_FOREIGN_GLOBALS = 64


def _inert(name: str) -> tuple[type, str]:
    module, _, qualname = name.rpartition(".")
    return type(qualname, (_Inert,), {"__module__": module}), name


def _safe_load(path: Path) -> object:
    """`torch.load(weights_only=True)`, with foreign classes replaced by inert placeholders.

    A full mmengine training checkpoint pickles bookkeeping objects beside the weights (e.g.
    `mmengine.logging.HistoryBuffer` in `message_hub`), which the weights-only unpickler
    refuses. Each refused name is allowed again as a do-nothing `_Inert` class, so the tensors
    load while nothing from the file is executed; the placeholders never reach the model.
    """
    inert: list[tuple[type, str]] = []
    mmap = zipfile.is_zipfile(path)  # retries then cost no re-read of multi-GB files
    while True:
        try:
            with torch.serialization.safe_globals(inert):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as error:
            match = _FOREIGN_GLOBAL.search(str(error))
            if match is None or len(inert) >= _MAX_FOREIGN_GLOBALS:
                raise
            inert.append(_inert(match.group(1)))


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The name -> tensor map of a checkpoint file: unwrapped, `module.` stripped, not renamed.

    Raises FileNotFoundError for a missing path and CheckpointError for anything that is not a
    tensor dictionary saved by torch (text, random bytes, truncated files, pickled objects).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = _safe_load(path)
    except Exception as error:  # torch.load raises many types for foreign bytes
        if "weights_only" in str(error) or "Weights only" in str(error):
            raise CheckpointError(
                f"{path}: torch.load(weights_only=True) refused the file "
                f"({_torch_load_detail(error)}): it is not a plain tensor checkpoint or it "
                "carries pickled objects/code, which is never executed. If it is a trusted full "
                "training checkpoint, save its state_dict alone and load that.") from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another format): "
            f"{type(error).__name__}: {_torch_load_detail(error)}") from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, _Inert):
        kind = type(obj)
        raise CheckpointError(f"{path} holds a pickled {kind.__module__}.{kind.__qualname__} "
                              "object, not a checkpoint (nothing in it was executed)")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    for wrapper in WRAPPER_KEYS:
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = str(key).removeprefix("module.")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, "
                                  "not a tensor (no state_dict/model entry found?)")
        state[name] = value
    return state


def _few(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def to_focsam_names(state: Mapping[str, torch.Tensor]
                    ) -> tuple[CheckpointKind, dict[str, torch.Tensor]]:
    """Detect the naming (official SAM or FocSAM) and return the state under FocSAM names."""
    official = [k for k in state if k.startswith(tuple(OFFICIAL_TO_FOCSAM_PREFIX))]
    focsam = [k for k in state if k.startswith(FOCSAM_PREFIXES)]
    if official and focsam:
        raise CheckpointError(f"checkpoint mixes official SAM names ({_few(official)}) and "
                              f"FocSAM names ({_few(focsam)})")
    if official:
        unknown = [k for k in state if not k.startswith(tuple(OFFICIAL_TO_FOCSAM_PREFIX))]
        if unknown:
            raise CheckpointError(f"official SAM checkpoint (detected kind 'official_sam') has "
                                  f"unexpected keys without a known prefix: {_few(unknown)}")
        return "official_sam", {official_to_focsam_key(k): v for k, v in state.items()}
    if focsam:
        return "focsam", dict(state)
    raise CheckpointError(
        f"no key has a known prefix (official SAM {tuple(OFFICIAL_TO_FOCSAM_PREFIX)} or FocSAM "
        f"{FOCSAM_PREFIXES}); first keys: {_few(list(state))}")


def _block_count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    matches = (_BLOCK_KEY.match(k) for k in state)
    indices = {int(m.group(2)) for m in matches if m and m.group(1) == prefix}
    return max(indices) + 1 if indices else 0


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    return tuple(state[key].shape) if key in state else None


def _detect_encoder(state: Mapping[str, torch.Tensor], eps: float) -> EncoderConfig:
    pos = _shape(state, "backbone.pos_embed")
    if pos is None or len(pos) != 4:
        raise CheckpointError(f"cannot detect the backbone: 'backbone.pos_embed' is "
                              f"{'missing' if pos is None else f'of shape {list(pos)}'}")
    dim, depth = pos[3], _block_count(state, "backbone")
    if depth == 0:
        raise CheckpointError("cannot detect the backbone: no 'backbone.blocks.*' keys")
    rel0 = _shape(state, "backbone.blocks.0.attn.rel_pos_h")
    if rel0 is None or len(rel0) != 2 or rel0[1] == 0 or dim % rel0[1]:
        raise CheckpointError(f"cannot detect the head count from "
                              f"'backbone.blocks.0.attn.rel_pos_h' {rel0} and embed dim {dim}")
    global_blocks, windows = [], set()
    for i in range(depth):
        rel = (_shape(state, f"backbone.blocks.{i}.attn.rel_pos_h")
               or _shape(state, f"backbone.blocks.{i}.attn.rel_pos_w"))
        if rel is None:
            continue  # reported as missing by the strict check
        if rel[0] == 2 * EMBED_GRID - 1:
            global_blocks.append(i)
        else:
            windows.add((rel[0] + 1) // 2)
    if len(windows) > 1:
        raise CheckpointError(f"windowed blocks disagree on the window size: {sorted(windows)}")
    lin1 = _shape(state, "backbone.blocks.0.mlp.lin1.weight")
    patch = _shape(state, "backbone.patch_embed.proj.weight")
    return EncoderConfig(
        embed_dim=dim, depth=depth, num_heads=dim // rel0[1],
        global_attn_indexes=tuple(global_blocks),
        window_size=windows.pop() if windows else 14,
        patch_size=patch[-1] if patch else 16,
        mlp_ratio=lin1[0] / dim if lin1 else 4.0,
        layer_norm_eps=eps,
    )


def _detect_refiner(state: Mapping[str, torch.Tensor]) -> RefinerConfig | None:
    if not any(k.startswith("refine_head.") for k in state):
        return None
    hidden = _shape(state, "refine_head.blocks.0.img2cls.mlp.0.weight")
    default = RefinerConfig()
    return dataclasses.replace(
        default, depth=_block_count(state, "refine_head"),
        mlp_ratio=hidden[0] / default.embed_dim if hidden else default.mlp_ratio)


def _variant_name(encoder: EncoderConfig, refiner: RefinerConfig | None) -> str:
    for name, known in VARIANTS.items():
        same_encoder = dataclasses.replace(known.encoder, layer_norm_eps=encoder.layer_norm_eps)
        if same_encoder == encoder and (refiner is None or refiner == known.refiner):
            return name
    return "custom"


def _config_for(kind: CheckpointKind, state: Mapping[str, torch.Tensor],
                layer_norm_eps: float | None) -> FocSAMConfig:
    """Config of a FocSAM-named state; the kind decides the default eps and the refiner."""
    if layer_norm_eps is None:
        layer_norm_eps = 1e-6 if kind == "official_sam" else 1e-5
    encoder = _detect_encoder(state, layer_norm_eps)
    refiner = None if kind == "official_sam" else _detect_refiner(state)
    return FocSAMConfig(_variant_name(encoder, refiner), encoder, refiner)


def detect_config(state: Mapping[str, torch.Tensor],
                  layer_norm_eps: float | None = None) -> FocSAMConfig:
    """The architecture a state dict (official SAM or FocSAM names) was saved from.

    From shapes: embed dim from `pos_embed`, depth = number of blocks, head dim from the
    `rel_pos_h` width, global blocks = those with a (2*64-1)-row table, refiner depth = number
    of `refine_head` blocks. Official SAM -> plain SAM with eps 1e-6, FocSAM -> eps 1e-5, unless
    `layer_norm_eps` is given. The variant is named after the VARIANTS entry it matches, else
    "custom".
    """
    return _config_for(*to_focsam_names(state), layer_norm_eps)


def expected_shapes(cfg: FocSAMConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the model `cfg` describes, with its shape (built on meta)."""
    return {k: tuple(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}


def check_state(state: Mapping[str, torch.Tensor], cfg: FocSAMConfig, kind: str,
                source: str = "checkpoint") -> None:
    """Raise CheckpointError unless `state` has exactly the keys and shapes `cfg` needs."""
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(s)})" for k, s in expected.items()
             if k in state and tuple(state[k].shape) != s]
    not_float = [f"{k} ({state[k].dtype})" for k in expected
                 if k in state and not state[k].is_floating_point()]
    problems = [f"{label} ({len(keys)}): {_few(keys)}" for label, keys in (
        ("missing keys", missing), ("unexpected keys", unexpected),
        ("wrong shapes", wrong), ("non-float tensors", not_float)) if keys]
    if problems:
        raise CheckpointError(f"{source} (detected kind {kind!r}, variant {cfg.variant!r}) does "
                              f"not match the model: " + "; ".join(problems))


def model_from_state(state: Mapping[str, torch.Tensor],
                     layer_norm_eps: float | None = None) -> tuple[FocSAM, CheckpointInfo]:
    """Build the detected model and load `state` into it strictly (tensors become float32)."""
    kind, renamed = to_focsam_names(state)
    cfg = _config_for(kind, renamed, layer_norm_eps)
    check_state(renamed, cfg, kind)
    model = build_model(cfg, device="meta")
    # assign=True adopts the loaded tensors instead of copying into freshly allocated ones.
    model.load_state_dict({k: v.to(torch.float32) for k, v in renamed.items()}, strict=True,
                          assign=True)
    left = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"tensors outside the state dict stayed unallocated: {_few(left)}")
    return model.eval(), CheckpointInfo(kind, cfg, len(renamed))


def load_checkpoint(path: str | Path,
                    layer_norm_eps: float | None = None) -> tuple[FocSAM, CheckpointInfo]:
    """Load an official SAM or FocSAM checkpoint into a float32 eval-mode `FocSAM` on CPU.

    `layer_norm_eps` overrides the ViT block LayerNorm eps chosen from the kind (official SAM
    1e-6, FocSAM 1e-5). Raises CheckpointError (a ValueError) for any unusable file.
    """
    state = read_checkpoint(path)
    try:
        return model_from_state(state, layer_norm_eps)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
