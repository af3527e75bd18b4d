"""The catalogue of official checkpoints: well-formed, and each entry fetchable or explained."""

from __future__ import annotations

import re

import pytest

from focsam_onnx.errors import NotFound
from focsam_onnx.weights.catalog import CATALOG, SAM_RELEASE, find


def test_names_are_unique_and_found():
    names = [e.name for e in CATALOG]
    assert len(set(names)) == len(names)
    assert all(find(n).name == n for n in names)
    with pytest.raises(NotFound, match="unknown checkpoint 'sam_vit_x'; known: sam_vit_b"):
        find("sam_vit_x")


@pytest.mark.parametrize("entry", [e for e in CATALOG if e.url], ids=lambda e: e.name)
def test_downloadable_entries_name_their_file_size_and_checksum(entry):
    assert entry.url == SAM_RELEASE + entry.filename
    assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and entry.size > 100_000_000
    assert entry.by_hand is None


def test_by_hand_entries_say_how():
    manual = [e for e in CATALOG if e.url is None]
    assert [e.name for e in manual] == ["focsam_vit_h"]
    assert all(e.by_hand and e.sha256 is None and "drive.google.com" in e.by_hand
               for e in manual)
