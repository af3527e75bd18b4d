"""Checkpoint loading: kinds, variant detection, strictness, and refusal of unsafe/bad files."""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from focsam_onnx.config import VARIANTS, get_variant
from focsam_onnx.models.checkpoint import (
    CheckpointError,
    detect_config,
    focsam_to_official_key,
    load_checkpoint,
)
from focsam_onnx.models.focsam import build_model


@pytest.fixture(scope="module")
def tiny_state(golden) -> dict[str, torch.Tensor]:
    """The golden tiny FocSAM state dict (FocSAM names, with refiner)."""
    return torch.load(golden / "tiny_focsam.pth", map_location="cpu", weights_only=True)[
        "state_dict"]


@pytest.fixture(scope="module")
def sam_state(tiny_state) -> dict[str, torch.Tensor]:
    """Its SAM part under official names, as `sam_vit_*.pth` stores it."""
    return {focsam_to_official_key(k): v for k, v in tiny_state.items()
            if not k.startswith("refine_head.")}


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _assert_loaded_exactly(model, state: dict[str, torch.Tensor]) -> None:
    ours = model.state_dict()
    assert list(ours) == list(state) or set(ours) == set(state)
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


def test_golden_focsam_checkpoint(golden, tiny_state):
    model, info = load_checkpoint(golden / "tiny_focsam.pth")
    assert info.kind == "focsam"
    assert info.num_tensors == 314
    assert info.config == get_variant("tiny")
    assert model.backbone.blocks[0].norm1.eps == 1e-5
    assert not model.training
    _assert_loaded_exactly(model, tiny_state)


def test_official_sam_checkpoint_is_plain_sam(tmp_path, sam_state, tiny_state):
    model, info = load_checkpoint(_save(sam_state, tmp_path / "sam.pth"))
    assert info.kind == "official_sam"
    assert info.num_tensors == len(sam_state) == 202  # 65 backbone + 17 neck + 120 decode_head
    assert info.config == get_variant("tiny").as_plain_sam()
    assert model.refine_head is None
    assert model.backbone.blocks[0].norm1.eps == 1e-6
    _assert_loaded_exactly(model, {k: v for k, v in tiny_state.items()
                                   if not k.startswith("refine_head.")})


def test_wrappers_and_module_prefix(tmp_path, tiny_state):
    wrapped = {"meta": {"iter": 1}, "model": {"module." + k: v for k, v in tiny_state.items()}}
    model, info = load_checkpoint(_save(wrapped, tmp_path / "wrapped.pth"))
    assert info.kind == "focsam" and info.config.variant == "tiny"
    _assert_loaded_exactly(model, tiny_state)


def test_converted_sam_without_refiner_keeps_focsam_eps(tmp_path, tiny_state):
    converted = {k: v for k, v in tiny_state.items() if not k.startswith("refine_head.")}
    path = _save(converted, tmp_path / "converted.pth")
    model, info = load_checkpoint(path)
    assert info.kind == "focsam"
    assert info.config.refiner is None and info.config.variant == "tiny"
    assert model.backbone.blocks[3].norm2.eps == 1e-5
    model, info = load_checkpoint(path, layer_norm_eps=1e-6)
    assert model.backbone.blocks[3].norm2.eps == 1e-6
    assert info.config == get_variant("tiny").as_plain_sam()


def test_training_checkpoint_with_foreign_objects(tmp_path, tiny_state, monkeypatch):
    """A full mmengine checkpoint pickles its own classes beside the weights."""
    module = types.ModuleType("fake_mmengine_logging")

    class HistoryBuffer:
        def __init__(self):
            self.values = [1.0, 2.0]

    HistoryBuffer.__module__ = module.__name__
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    monkeypatch.setitem(sys.modules, module.__name__, module)
    training = {"meta": {"iter": 160000}, "state_dict": tiny_state,
                "message_hub": {"log_scalars": {"loss": HistoryBuffer()}}}
    path = _save(training, tmp_path / "iter_160000.pth")
    monkeypatch.delitem(sys.modules, module.__name__)  # as on a machine without mmengine
    model, info = load_checkpoint(path)
    assert info.kind == "focsam" and info.num_tensors == 314
    _assert_loaded_exactly(model, tiny_state)


def test_half_precision_tensors_become_float32(tmp_path, tiny_state):
    half = {k: v.half() for k, v in tiny_state.items()}
    model, _ = load_checkpoint(_save(half, tmp_path / "half.pth"))
    weight = model.decode_head.iou_token.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, half["decode_head.iou_token.weight"].float())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_detect_config_recovers_every_variant(name):
    cfg = get_variant(name)
    state = build_model(cfg, device="meta").state_dict()
    assert detect_config(state) == cfg
    official = {focsam_to_official_key(k): v
                for k, v in build_model(cfg.as_plain_sam(), device="meta").state_dict().items()}
    assert detect_config(official) == cfg.as_plain_sam()


def test_detect_config_names_unknown_architectures_custom():
    encoder = dataclasses.replace(get_variant("tiny").encoder, depth=3, global_attn_indexes=(2,))
    cfg = dataclasses.replace(get_variant("tiny"), encoder=encoder)
    detected = detect_config(build_model(cfg, device="meta").state_dict())
    assert detected.variant == "custom"
    assert detected.encoder == encoder


# ---- files that must be refused -------------------------------------------------------------


def test_text_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(os.urandom(1 << 14))
    with pytest.raises(CheckpointError, match=r"noise\.pth.*(weights_only|not a readable)"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path, golden):
    data = (golden / "tiny_focsam.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this runs `touch <marker>`: proof of code execution if the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("container", ["plain_pickle", "torch_save"])
def test_malicious_pickle_is_not_executed(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"backbone.pos_embed": _Payload(marker)}}
    if container == "plain_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights_only=True.*never executed"):
        load_checkpoint(path)
    assert not marker.exists()


def test_not_a_dict(tmp_path):
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(_save([torch.zeros(1)], tmp_path / "list.pth"))


def test_missing_key(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["decode_head.iou_token.weight"]
    with pytest.raises(CheckpointError,
                       match=r"kind 'focsam'.*missing keys \(1\): decode_head\.iou_token\.weight"):
        load_checkpoint(_save(state, tmp_path / "missing.pth"))


def test_extra_key(tmp_path, sam_state):
    state = {**sam_state, "mask_decoder.extra_head.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"kind 'official_sam'.*unexpected keys \(1\): "
                                              r"decode_head\.extra_head\.weight"):
        load_checkpoint(_save(state, tmp_path / "extra.pth"))


def test_wrong_shape(tmp_path, tiny_state):
    state = {**tiny_state, "neck.no_mask_embed.weight": torch.zeros(1, 128)}
    with pytest.raises(CheckpointError, match=r"wrong shapes \(1\): neck\.no_mask_embed\.weight "
                                              r"\[1, 128\] \(expected \[1, 256\]\)"):
        load_checkpoint(_save(state, tmp_path / "shape.pth"))


def test_no_known_prefix(tmp_path):
    state = {"encoder.weight": torch.zeros(2), "head.bias": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="no key has a known prefix.*encoder.weight"):
        load_checkpoint(_save(state, tmp_path / "foreign.pth"))


def test_mixed_official_and_focsam_names(tmp_path, tiny_state):
    state = {**tiny_state, "image_encoder.pos_embed": tiny_state["backbone.pos_embed"]}
    with pytest.raises(CheckpointError, match="mixes official SAM names"):
        load_checkpoint(_save(state, tmp_path / "mixed.pth"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pth")
