"""The serve benchmark runs end to end on a tiny model and reports what it promises."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from focsam_onnx.bench.serve_latency import main  # noqa: E402


def test_serve_bench_reports_round_trips(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main(["--model", str(tiny_model_dir), "--threads", "1", "--sessions", "1",
                 "--clicks", "3", "--prefetch", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    idle = report["rows"]["idle"]
    assert [r["refine"] for r in idle] == [False, True, False]
    assert all(r["client_ms"] >= r["server_ms"] >= r["engine_ms"] > 0 for r in idle)
    assert all(r["saved_ms"] >= r["client_ms"] for r in idle)
    assert all(r["background"] for r in report["rows"]["background"])
    assert report["idle"]["click"]["client"]["n"] == 2
    assert set(report["targets"]) >= {"overhead_p50_ms"}
    assert "client − engine p50" in capsys.readouterr().out
