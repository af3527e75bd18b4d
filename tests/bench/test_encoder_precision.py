"""The encoder-precision bench on a real (tiny) export: three rows, interleaved, with peaks."""

from __future__ import annotations

import json
import shutil

from focsam_onnx.bench.encoder_precision import main


def test_times_every_precision_side_by_side(tiny_model_dir, tmp_path, capsys):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    assert main(["--model", str(model), "--repeats", "1", "--no-gate",
                 "--json", str(tmp_path / "out.json")]) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert set(result["median_s"]) == {"fp32", "bf16", "int8"}
    assert result["vs_ort_fp32"]["fp32"] == 1.0
    assert all(len(t) == 1 and t[0] > 0 for t in result["seconds"].values())
    assert all(mb > 50 for mb in result["peak_mb"].values())
    assert result["gate"] == {}  # a plain export offers fp32 only, and --no-gate computed none
    table = capsys.readouterr().out
    assert "| bf16 | openvino |" in table and "| int8 | onnxruntime |" in table
