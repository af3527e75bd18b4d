"""The catalogue of official checkpoints: well-formed, and each entry fetchable or explained."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from focsam_onnx.errors import NotFound, Unavailable
from focsam_onnx.weights.catalog import CATALOG, DEMO, SAM_RELEASE, find
from focsam_onnx.weights.packaged import packaged_checkpoint, packaged_path

REPO = Path(__file__).resolve().parents[2]


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
    manual = [e for e in CATALOG if e.url is None and not e.packaged]
    assert [e.name for e in manual] == ["focsam_vit_h"]
    assert all(e.by_hand and e.sha256 is None and "drive.google.com" in e.by_hand
               for e in manual)


def test_the_demo_model_is_the_one_packaged_entry_and_the_wheel_holds_it():
    assert [e.name for e in CATALOG if e.packaged] == [DEMO]
    entry = find(DEMO)
    assert entry.filename == "demo_tiny.pth" and entry.url is None and entry.by_hand is None
    assert "not FocSAM's quality" in entry.description
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"focsam_onnx.weights" = ["{entry.filename}"]' in pyproject
    assert f"!/weights/{entry.filename}" in (REPO / ".gitignore").read_text().splitlines()


def test_the_packaged_demo_checkpoint_is_the_catalogued_one():
    """Fails while weights/demo_tiny.pth and the DEMO_TINY_* constants disagree."""
    entry = find(DEMO)
    path = packaged_path(entry)
    if not path.is_file():
        with pytest.raises(Unavailable) as absent:
            packaged_checkpoint(entry)
        pytest.skip(str(absent.value))
    data = path.read_bytes()
    assert entry.sha256 == hashlib.sha256(data).hexdigest(), (
        f"record DEMO_TINY_SHA256 = {hashlib.sha256(data).hexdigest()!r} in weights/catalog.py")
    assert entry.size == len(data), f"record DEMO_TINY_SIZE = {len(data):_} in weights/catalog.py"
    assert 1_000_000 < entry.size < 30_000_000  # small enough for a wheel
    assert packaged_checkpoint(entry) == path
