"""The model's state-dict keys and shapes equal the FocSAM and official SAM manifests (spec §8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from focsam_onnx.config import get_variant
from focsam_onnx.models.checkpoint import focsam_to_official_key, official_to_focsam_key
from focsam_onnx.models.focsam import build_model


@pytest.fixture(scope="module")
def manifest(golden: Path):
    """`manifest(name)` -> rows (key, shape, dtype) of `../shared/spec/<name>` (beside golden,
    so it is missing exactly when golden is: a failure under CI, a skip elsewhere)."""

    def load(name: str) -> list[tuple[str, tuple[int, ...], str]]:
        rows = (golden.parent / "spec" / name).read_text().splitlines()[1:]
        return [(k, tuple(json.loads(s)), d) for k, s, d in (r.split("\t") for r in rows)]

    return load


def _rows(state, rename=lambda k: k) -> list[tuple[str, tuple[int, ...], str]]:
    return [(rename(k), tuple(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in state.items()]


@pytest.fixture(scope="module")
def plain_vit_h():
    return build_model(get_variant("vit_h").as_plain_sam(), device="meta")


def test_sam_part_equals_focsam_manifest(plain_vit_h, manifest):
    """backbone / neck / decode_head: names, shapes, dtype and order (no refiner needed)."""
    expected = [row for row in manifest("focsam_vit_h_state_dict.tsv")
                if not row[0].startswith("refine_head.")]
    assert _rows(plain_vit_h.state_dict()) == expected


def test_full_model_equals_focsam_manifest(manifest):
    model = build_model(get_variant("vit_h"), device="meta")
    assert _rows(model.state_dict()) == manifest("focsam_vit_h_state_dict.tsv")


def test_plain_sam_mapped_to_official_names_equals_official_manifest(plain_vit_h, manifest):
    """Same names, shapes and dtypes. Not the same order: upstream FocSAM registers each
    two-way block's norm4 after cross_attn_image_to_token, official SAM before it."""
    rows = _rows(plain_vit_h.state_dict(), focsam_to_official_key)
    official = manifest("sam_official_vit_h_state_dict.tsv")
    assert len(rows) == len(official) == 594
    assert {k: (s, d) for k, s, d in rows} == {k: (s, d) for k, s, d in official}


def test_official_names_round_trip(manifest):
    for key, _, _ in manifest("sam_official_vit_h_state_dict.tsv"):
        assert focsam_to_official_key(official_to_focsam_key(key)) == key
    assert official_to_focsam_key("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix") \
        == "neck.pos_embed_layer.positional_encoding_gaussian_matrix"
    assert official_to_focsam_key("prompt_encoder.point_embeddings.3.weight") \
        == "neck.point_embeds.3.weight"
    with pytest.raises(ValueError, match="refine_head.embed_proj.bias"):
        focsam_to_official_key("refine_head.embed_proj.bias")


def test_parameter_counts_match_spec(plain_vit_h):
    """Spec §8.3: backbone 637,026,048; prompt encoder 6,220 + 256 buffer; decoder 4,058,340."""
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(plain_vit_h.backbone) == 637_026_048
    assert count(plain_vit_h.neck) == 6_220
    assert sum(b.numel() for b in plain_vit_h.neck.buffers()) == 256
    assert count(plain_vit_h.decode_head) == 4_058_340
