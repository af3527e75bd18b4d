"""scipy and matplotlib are the `evaluate` extra: without them the engine, `embed` and every
dataset but SBD work, and what needs them says, in one line, which extra to install."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from focsam_onnx.errors import MissingExtra
from focsam_onnx.evaluation.datasets import open_dataset
from focsam_onnx.evaluation.evaluate import RunSettings, evaluate


@pytest.fixture
def without_extra(monkeypatch):
    for name in ("scipy", "scipy.io", "matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError


def test_sbd_names_the_evaluate_extra(tmp_path, without_extra):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "inst").mkdir()
    (tmp_path / "inst" / "a.mat").write_bytes(b"")
    (tmp_path / "val.txt").write_text("a\n")
    with pytest.raises(MissingExtra, match=r"MATLAB.*pip install 'focsam-onnx\[evaluate\]'"):
        open_dataset("sbd", tmp_path)


def test_evaluate_refuses_before_the_run_not_after(tmp_path, without_extra):
    settings = RunSettings("folder", "focsam", 0, "upstream", "model")
    with pytest.raises(MissingExtra, match=r"mIoU curve needs the 'evaluate' extra") as err:
        evaluate(None, [], tmp_path / "results", settings)  # no engine needed to refuse
    assert isinstance(err.value, ValueError) and err.value.extra == "evaluate"


def test_folder_datasets_read_without_the_extra(tmp_path, without_extra):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(tmp_path / folder / "x.png")
    assert [s.id for s in open_dataset("folder", tmp_path)] == ["x"]


def test_the_engine_and_the_cli_import_neither():
    code = ("import sys, focsam_onnx.cli, focsam_onnx.engine.focsam_engine,"
            " focsam_onnx.engine.embed, focsam_onnx.evaluation.evaluate\n"
            "print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
