"""The latency benchmark: its inputs, statistics, caches, baseline exports and a --quick run."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from focsam_onnx.bench import cases, exports, isolated, measure, report, system_info
from focsam_onnx.bench import stages as stages_module
from focsam_onnx.engine.graph_spec import DECODER
from focsam_onnx.engine.loaded_model import read_manifest
from focsam_onnx.engine.roi import selected_windows

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_help_names_its_command():
    from typer.testing import CliRunner

    from focsam_onnx.cli import app

    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    assert result.output.startswith("usage: focsam-onnx bench ")
    assert "--variant" in result.output


def test_summarize_gives_linear_percentiles_in_ms():
    stats = measure.summarize([0.001 * i for i in range(1, 11)])  # 1 ... 10 ms
    assert stats["p50_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.1)
    assert stats["min_ms"] == pytest.approx(1.0)
    assert stats["n"] == 10


@pytest.mark.parametrize("windows", cases.REFINER_WINDOWS)
def test_window_mask_selects_that_many_windows_in_plain_and_shifted_blocks(windows):
    mask = cases.window_token_mask(windows)
    assert mask.shape == (1, 1, 64, 64)
    assert selected_windows(mask).size == windows
    assert selected_windows(mask, shift=8).size == windows


@pytest.mark.parametrize("windows", [0, 2, 25])
def test_window_mask_rejects_other_counts(windows):
    with pytest.raises(ValueError, match=str(windows)):
        cases.window_token_mask(windows)


def test_decoder_feeds_end_with_the_padding_point():
    feeds = cases.decoder_feeds(5, np.random.default_rng(0))
    assert list(feeds) == DECODER.input_names
    coords, labels = feeds["point_coords"], feeds["point_labels"]
    assert coords.shape == (1, 6, 2) and labels.shape == (1, 6)
    np.testing.assert_array_equal(coords[0, -1], [0.0, 0.0])
    assert labels[0, -1] == -1.0 and labels[0, 0] == 1.0
    assert set(labels[0, :-1].tolist()) <= {0.0, 1.0}
    assert feeds["has_mask_input"].tolist() == [1.0]


def _entry(ms: float) -> dict:
    return {"p50_ms": ms}


def test_ratios_divide_p50s_and_average_over_counts():
    stages = {"encoder": _entry(300.0), "session_interaction_per_click": _entry(5.0),
              "decoder_1_click": _entry(10.0), "decoder_5_clicks": _entry(20.0),
              "decoder_20_clicks": _entry(30.0)}
    stages.update({f"refiner_{k}_window" + ("s" if k > 1 else ""): _entry(2.0 * k)
                   for k in cases.REFINER_WINDOWS})
    baselines = {"torch_encoder": _entry(600.0), "simpleclick_vit_h_proxy": _entry(1000.0),
                 "sam_onnx_decoder_1_click": {**_entry(20.0), "interleaved_ours_over_this": 0.6},
                 "sam_onnx_decoder_5_clicks": {**_entry(20.0), "interleaved_ours_over_this": 0.7},
                 "sam_onnx_decoder_20_clicks": {**_entry(20.0),
                                                "interleaved_ours_over_this": 0.8},
                 "torch_decoder_1_click": _entry(10.0), "torch_decoder_5_clicks": _entry(10.0),
                 "torch_decoder_20_clicks": _entry(10.0)}
    baselines.update({f"torch_refiner_{k}_window" + ("s" if k > 1 else ""): _entry(4.0 * k)
                      for k in cases.REFINER_WINDOWS})
    stages.update({f"decoder_to_image_{n}_click" + ("s" if n > 1 else ""):
                   {**_entry(9.0), "interleaved_vs_sam_single_mask": r}
                   for n, r in zip(cases.DECODER_CLICKS, (0.5, 0.6, 0.9))})
    stages.update({f"refine_click_{k}_window" + ("s" if k > 1 else ""):
                   {**_entry(9.0), "interleaved_vs_reference": 0.1 * k}
                   for k in cases.REFINE_CLICK_WINDOWS})
    stages.update({f"stateless_click_{k}": {**_entry(5.0), "interleaved_vs_session": r}
                   for k, r in zip(stages_module.STATELESS_STEPS, (1.0, 1.1, 1.2))})
    ratios = report.compute_ratios(stages, baselines)
    assert ratios["stateless_click_vs_session"] == pytest.approx(1.1)
    assert ratios["decoder_vs_sam_onnx_decoder"] == pytest.approx((0.5 + 0.6 + 0.9) / 3)
    assert ratios["refine_click_4_windows_vs_reference"] == pytest.approx(0.4)
    assert ratios["refine_click_16_windows_vs_reference"] == pytest.approx(1.6)
    assert ratios["decoder_graph_vs_sam_onnx_decoder_4_masks"] == pytest.approx(
        (0.5 + 1.0 + 1.5) / 3)
    assert ratios["decoder_graph_vs_sam_onnx_decoder_4_masks_interleaved"] == pytest.approx(0.7)
    assert ratios["interaction_vs_simpleclick_vit_h"] == pytest.approx(0.005)
    assert ratios["encoder_ort_vs_torch"] == pytest.approx(0.5)
    assert ratios["decoder_ort_vs_torch"] == pytest.approx(2.0)
    assert ratios["refiner_ort_vs_torch"] == pytest.approx(0.5)
    assert ratios["refiner_4_windows_vs_decoder_click"] == pytest.approx(8.0 / 20.0)


def test_click_precision_ratios():
    # the interaction's ratio to the proxy is the one taken within its rounds, not the p50s'
    stages = {f"interaction_{p}_{k}_windows":
              {**_entry(t * k), "interleaved_vs_proxy": t * k / 1000}
              for p, t in (("fp32", 2.0), ("bf16", 1.0)) for k in (4, 16)}
    for p, r in (("fp32", 1.0), ("bf16", 0.4)):
        stages.update({f"click_refine_{p}_4_windows": {**_entry(9.0), "interleaved_vs_fp32": r}})
        stages.update({f"click_decoder_to_image_{p}_{n}_click" + ("s" if n > 1 else ""):
                       {**_entry(9.0), "interleaved_vs_sam_single_mask": r * n}
                       for n in cases.DECODER_CLICKS})
    ratios = report.click_precision_ratios(stages)
    assert ratios["interaction_bf16_4_windows_vs_simpleclick_vit_h"] == pytest.approx(0.004)
    assert ratios["interaction_fp32_16_windows_vs_simpleclick_vit_h"] == pytest.approx(0.032)
    assert ratios["refine_click_bf16_4_windows_vs_fp32"] == pytest.approx(0.4)
    assert ratios["decoder_bf16_vs_sam_onnx_decoder"] == pytest.approx(0.4 * 26 / 3)
    assert report.click_precision_ratios({}) == {}


def test_peak_rss_resets_per_stage():
    if not system_info.reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its VmHWM")
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    grown = system_info.peak_rss_mb()
    del block
    system_info.reset_peak_rss()
    assert grown - system_info.peak_rss_mb() > 48
    # The lifetime peak survives the reset (within the kernel's per-CPU batching of RSS counts).
    assert system_info.process_peak_mb() > grown - 1


def test_a_fresh_process_peak_is_its_own(tiny_model_dir):
    """A stage's peak memory in a spawned process comes from that process alone: its ru_maxrss
    starts from the parent's resident set (both click precisions once read 2.2 GB on vit_b)."""
    from focsam_onnx.bench.click_precision import refine_click_peak_mb

    held = np.ones(768 * 1024 * 1024 // 8)  # 768 MiB resident in this process, touched
    peak = isolated.in_subprocess(refine_click_peak_mb, str(tiny_model_dir), "fp32", 1)
    assert 0 < peak < 512 and held[-1] == 1


def _as_random_init(src: Path, dst: Path, variant: str, seed: int, code: str | None = None
                    ) -> None:
    shutil.copytree(src, dst)
    source = exports.export_source(variant, seed)
    if code is not None:
        source = dataclasses.replace(source, code=code)
    manifest = dataclasses.replace(read_manifest(dst), source=source)
    (dst / "manifest.json").write_text(json.dumps(manifest.to_dict()))


def test_model_cache_is_reused_only_for_its_variant_and_seed(tiny_model_dir, tmp_path,
                                                             monkeypatch):
    calls = []
    monkeypatch.setattr(isolated, "in_subprocess", lambda fn, *args: calls.append(args))
    _as_random_init(tiny_model_dir, tmp_path / "tiny-seed0", "tiny", 0)
    assert exports.focsam_model_dir(tmp_path, "tiny", 0) == tmp_path / "tiny-seed0"
    assert calls == []
    _as_random_init(tiny_model_dir, tmp_path / "tiny-seed1", "tiny", 0)  # wrong seed inside
    assert exports.focsam_model_dir(tmp_path, "tiny", 1) == tmp_path / "tiny-seed1"
    assert calls == [("tiny", 1, str(tmp_path / "tiny-seed1"))]
    assert not (tmp_path / "tiny-seed1" / "manifest.json").exists()  # stale manifest dropped


def test_cache_rejects_an_export_from_other_code(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(isolated, "in_subprocess", lambda fn, *args: calls.append(args))
    _as_random_init(tiny_model_dir, tmp_path / "tiny-seed0", "tiny", 0, code="0123456789abcdef")
    exports.focsam_model_dir(tmp_path, "tiny", 0)
    assert calls == [("tiny", 0, str(tmp_path / "tiny-seed0"))]


def test_cache_rejects_a_truncated_graph(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(isolated, "in_subprocess", lambda fn, *args: calls.append(args))
    _as_random_init(tiny_model_dir, tmp_path / "tiny-seed0", "tiny", 0)
    decoder = tmp_path / "tiny-seed0" / "decoder.onnx"
    decoder.write_bytes(decoder.read_bytes()[:1000])
    exports.focsam_model_dir(tmp_path, "tiny", 0)
    assert calls == [("tiny", 0, str(tmp_path / "tiny-seed0"))]


def test_reference_graphs_are_exported_once_per_variant_seed_and_code(tmp_path, monkeypatch):
    calls = []

    def fake_export(fn, variant, seed, out_dir):
        calls.append((variant, seed))
        for name in exports.REFERENCE_GRAPHS:
            (Path(out_dir) / f"{name}.onnx").write_bytes(b"graph")

    monkeypatch.setattr(isolated, "in_subprocess", fake_export)
    path = exports.reference_graphs(tmp_path, "tiny", 0)
    assert path == tmp_path / "tiny-seed0-reference"
    assert exports.reference_graphs(tmp_path, "tiny", 0) == path
    assert calls == [("tiny", 0)]
    (path / "decoder.onnx").unlink()  # an incomplete folder is made again
    exports.reference_graphs(tmp_path, "tiny", 0)
    exports.reference_graphs(tmp_path, "tiny", 1)
    assert calls == [("tiny", 0), ("tiny", 0), ("tiny", 1)]


@pytest.mark.parity
def test_sam_onnx_decoder_export_matches_segment_anything_in_torch(tmp_path):
    import onnxruntime as ort
    import torch

    from focsam_onnx.bench.baselines import (
        SAM_OUTPUT_NAMES,
        build_random_sam,
        export_sam_onnx_decoder,
        sam_decoder_feeds,
    )
    from focsam_onnx.models.segment_anything_compat import import_segment_anything

    import_segment_anything()  # without torchvision, segment_anything needs placeholders
    from segment_anything.utils.onnx import SamOnnxModel

    sam = build_random_sam(seed=0)
    # The traced crop is exact for the example size's aspect ratio (see baselines.py).
    path = export_sam_onnx_decoder(sam, tmp_path / "sam_decoder.onnx", orig_hw=(600, 800))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(SAM_OUTPUT_NAMES)
    feeds = sam_decoder_feeds(cases.decoder_feeds(3, np.random.default_rng(1)), (600, 800))
    got = session.run(None, feeds)
    with torch.no_grad():
        want = SamOnnxModel(sam, return_single_mask=False)(
            *[torch.from_numpy(v) for v in feeds.values()])
    assert got[0].shape == (1, 4, 600, 800)
    for name, g, w in zip(SAM_OUTPUT_NAMES, got, want):
        assert np.abs(g - w.numpy()).max() < 1e-4, name


def test_simpleclick_proxy_vit_h_has_632m_parameters():
    import torch

    from focsam_onnx.bench.simpleclick_proxy import PlainViT, ProxyConfig

    cfg = ProxyConfig()
    with torch.device("meta"):
        model = PlainViT(cfg)
    c = 1280
    per_block = 12 * c * c + 13 * c  # qkv, proj, MLP 4x (all with bias), two LayerNorms
    expected = 32 * per_block + (3 * 16 * 16 * c + c) + 784 * c + 2 * c
    assert sum(p.numel() for p in model.parameters()) == expected == 631_668_480
    assert cfg.tokens == 784 and not cfg.reduced


@pytest.mark.parity
def test_simpleclick_proxy_export_matches_torch_and_is_cached(tmp_path):
    import onnxruntime as ort
    import torch

    from focsam_onnx.bench.simpleclick_proxy import ProxyConfig, build_proxy, export_proxy

    cfg = ProxyConfig(embed_dim=64, depth=2, num_heads=4, image_size=64)
    path = export_proxy(tmp_path, cfg, seed=3)
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64), np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": image})
    with torch.no_grad():
        want = build_proxy(cfg, seed=3)(torch.from_numpy(image)).numpy()
    assert got.shape == (1, 16, 64)
    assert np.abs(got - want).max() < 1e-4
    stamp = path.stat().st_mtime_ns
    assert export_proxy(tmp_path, cfg, seed=3) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not re-exported


def _figures(node, where: str = ""):
    """Every number in a JSON tree (booleans are flags, not figures), with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _figures(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _figures(value, f"{where}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield where, node


def test_precision_stage_times_every_precision_the_export_offers(tiny_model_dir, tmp_path):
    from focsam_onnx.bench.stages import Settings, encoder_precision_stages
    from focsam_onnx.export.encoder_precision import add_encoder_precisions

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    add_encoder_precisions(model, ["int8"], clicks=2, threads=2)
    got = isolated.in_subprocess(encoder_precision_stages, Settings(str(model), "tiny", 2, 0, 2))

    assert set(got) == {"encoder_fp32", "encoder_int8"}
    assert got["encoder_fp32"]["interleaved_vs_fp32"] == 1.0
    assert got["encoder_fp32"]["gate"] is None
    int8 = got["encoder_int8"]
    assert int8["runtime"] == "onnxruntime" and int8["n"] == 2 and int8["peak_mb"] > 0
    recorded = read_manifest(model).encoder_precisions["int8"].gate
    assert int8["gate"]["min_cosine"] == recorded.min_cosine
    assert int8["gate"]["mean_mask_iou"] == recorded.mean_mask_iou
    assert report.precision_ratios(got) == {"encoder_int8_vs_fp32": int8["interleaved_vs_fp32"]}
    rows = "\n".join(report._precision_rows(got))
    assert "| int8 | onnxruntime |" in rows and f"{recorded.min_cosine:.6f}" in rows


def test_quick_benchmark_end_to_end(tiny_model_dir, tmp_path):
    out, cache = tmp_path / "bench.json", tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "bench/latency.py", "--quick", "--model", str(tiny_model_dir),
         "--threads", "2", "--cache-dir", str(cache), "--json", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "torchvision" not in proc.stderr  # the exporters' chatter is silenced
    assert "| decoder_5_clicks |" in proc.stdout
    data = json.loads(out.read_text())

    stages = {"preprocess", "encoder", "encoder_fp32", "session_open_image",
              "session_reopen_disk_cache", "session_interaction_per_click"}
    stages |= {f"decoder_{n}_click" + ("s" if n > 1 else "") for n in cases.DECODER_CLICKS}
    stages |= {f"refiner_{k}_window" + ("s" if k > 1 else "") for k in cases.REFINER_WINDOWS}
    stages |= {f"decoder_to_image_{n}_click" + ("s" if n > 1 else "")
               for n in cases.DECODER_CLICKS}
    stages |= {f"refine_click_{k}_window" + ("s" if k > 1 else "")
               for k in cases.REFINE_CLICK_WINDOWS}
    stages |= {f"stateless_click_{k}" for k in stages_module.STATELESS_STEPS}
    stages |= {"stateless_cold_list"}
    for p in ("fp32", "bf16"):  # the click precisions (openvino is in dev)
        stages |= {f"interaction_{p}_{k}_windows" for k in (16, 4)}
        stages |= {f"click_decoder_to_image_{p}_{n}_click" + ("s" if n > 1 else "")
                   for n in cases.DECODER_CLICKS}
        stages |= {f"click_refine_{p}_{k}_window" + ("s" if k > 1 else "")
                   for k in cases.REFINE_CLICK_WINDOWS}
    assert set(data["stages"]) == stages
    baselines = {"torch_encoder", "simpleclick_vit_h_proxy"}
    for n in cases.DECODER_CLICKS:
        baselines |= {f"{p}_{n}_click" + ("s" if n > 1 else "")
                      for p in ("sam_onnx_decoder", "torch_decoder")}
    baselines |= {f"torch_refiner_{k}_window" + ("s" if k > 1 else "")
                  for k in cases.REFINER_WINDOWS}
    assert set(data["baselines"]) == baselines
    assert {"decoder_vs_sam_onnx_decoder", "refine_click_4_windows_vs_reference",
            "decoder_graph_vs_sam_onnx_decoder_4_masks_interleaved",
            "interaction_vs_simpleclick_vit_h", "stateless_click_vs_session",
            "encoder_ort_vs_torch", "interaction_bf16_4_windows_vs_simpleclick_vit_h",
            "interaction_bf16_16_windows_vs_simpleclick_vit_h",
            "refine_click_bf16_4_windows_vs_fp32", "decoder_bf16_vs_sam_onnx_decoder"
            } <= set(data["ratios"])
    assert data["ratios"]["refine_click_fp32_4_windows_vs_fp32"] == 1.0
    assert data["stages"]["interaction_bf16_4_windows"]["click_graphs_peak_mb"] > 0
    assert "### Click precisions (decoder and refiner)" in proc.stdout
    for entry in [*data["stages"].values(), *data["baselines"].values()]:
        assert {"p50_ms", "p90_ms", "peak_mb"} <= set(entry)
        assert entry["p90_ms"] >= entry["p50_ms"]
    figures = list(_figures({k: data[k] for k in ("stages", "baselines", "ratios")}))
    assert len(figures) > 100
    assert [(where, v) for where, v in figures if not (np.isfinite(v) and v > 0)] == []

    assert data["baselines"]["simpleclick_vit_h_proxy"]["reduced"] is True
    assert data["settings"]["variant"] == "tiny" and data["settings"]["quick"] is True
    assert data["machine"]["threads"] == 2 and data["machine"]["cpu_model"]
    assert data["versions"]["onnxruntime"] and data["date"]
