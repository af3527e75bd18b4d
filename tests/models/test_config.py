"""The variant table against the golden fixture's config and the official SAM sizes."""

from __future__ import annotations

import json

import pytest

from focsam_onnx.config import VARIANTS, get_variant


def test_tiny_is_the_golden_fixture(golden):
    config = json.loads((golden / "tiny_focsam_config.json").read_text())
    backbone, refiner = config["model"]["backbone"], config["model"]["refine_head"]
    tiny = get_variant("tiny")
    assert (tiny.encoder.embed_dim, tiny.encoder.depth, tiny.encoder.num_heads) == (
        backbone["embed_dim"], backbone["depth"], backbone["num_heads"])
    assert tiny.encoder.global_attn_indexes == tuple(backbone["global_attn_indexes"])
    assert tiny.encoder.window_size == backbone["window_size"]
    assert tiny.encoder.mlp_ratio == backbone["mlp_ratio"]
    assert tiny.encoder.layer_norm_eps == config["derived"]["backbone"]["layernorm_eps"]
    assert (tiny.refiner.depth, tiny.refiner.num_heads, tiny.refiner.window_size) == (
        refiner["depth"], refiner["num_heads"], refiner["window_size"])
    assert list(tiny.refiner.expand_ratio) == config["derived"]["refiner"]["expand_ratio"]


@pytest.mark.parametrize("name, dim, depth, heads, global_blocks", [
    ("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    ("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    ("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
])
def test_official_sam_sizes_and_released_refiner(name, dim, depth, heads, global_blocks):
    cfg = VARIANTS[name]
    assert (cfg.encoder.embed_dim, cfg.encoder.depth, cfg.encoder.num_heads) == (dim, depth, heads)
    assert cfg.encoder.global_attn_indexes == global_blocks
    assert (cfg.refiner.depth, cfg.refiner.window_size) == (12, 16)
    assert cfg.as_plain_sam().encoder.layer_norm_eps == 1e-6 and cfg.as_plain_sam().refiner is None


def test_unknown_variant_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown variant 'vit_x'; choose one of \['tiny'"):
        get_variant("vit_x")
