"""ViT-H end to end: export (weights over 2 GB), the parity gate, and the engine loading it.

Minutes of work and about 8 GB of memory: marked slow (`pytest -m slow`).
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.graph_spec import ENCODER
from focsam_onnx.engine.loaded_model import read_manifest

pytestmark = pytest.mark.slow


def test_vit_h_exports_with_external_data_and_runs(tmp_path):
    result = CliRunner().invoke(app, ["export", "--random-init", "vit_h", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path)
    assert manifest.files["encoder.onnx.data"].size > 2**31  # weights beside the graph
    assert manifest.parity["encoder"].worst <= ENCODER.outputs[0].tolerance
    assert "onnxsim cannot handle weights over 2 GB" in manifest.parity["encoder"].notes[0]
    engine = FocSAMEngine.open(tmp_path, threads=2)
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    encoded = engine.open_image(image)
    assert encoded.embeddings.shape == (1, 256, 64, 64)
    assert np.isfinite(encoded.embeddings).all() and encoded.embeddings.std() > 0.1
