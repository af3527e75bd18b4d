"""The packaged checkpoint is used only when it is the catalogue's file, and its absence is one
line saying what to do."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from focsam_onnx.errors import DamagedData, Unavailable
from focsam_onnx.weights.catalog import DEMO, find
from focsam_onnx.weights.packaged import packaged_checkpoint

DATA = b"float16 weights, or so"


def entry_for(data: bytes | None):
    digest = hashlib.sha256(data).hexdigest() if data is not None else None
    return dataclasses.replace(find(DEMO), sha256=digest, size=None if data is None else len(data))


def test_the_catalogued_file_is_returned(tmp_path):
    (tmp_path / "demo_tiny.pth").write_bytes(DATA)
    assert packaged_checkpoint(entry_for(DATA), tmp_path) == tmp_path / "demo_tiny.pth"


def test_an_absent_file_is_one_line_naming_the_alternatives(tmp_path):
    with pytest.raises(Unavailable) as err:
        packaged_checkpoint(entry_for(DATA), tmp_path)
    message = str(err.value)
    assert "\n" not in message and "demo_tiny is not in this build" in message
    assert "training.release" in message and "--model DIR or --weights NAME" in message


@pytest.mark.parametrize("recorded", [DATA + b"!", None], ids=["other file", "none recorded"])
def test_a_file_that_is_not_the_catalogued_one_is_refused(tmp_path, recorded):
    (tmp_path / "demo_tiny.pth").write_bytes(DATA)
    with pytest.raises(DamagedData, match=hashlib.sha256(DATA).hexdigest()):
        packaged_checkpoint(entry_for(recorded), tmp_path)
