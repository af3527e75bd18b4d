"""Every encoder precision side by side: speed, peak memory and quality-gate figures in one run.

`python -m focsam_onnx.bench.encoder_precision --model exported/vit_b` times the fp32, bf16 and
int8 encoders of one export interleaved in one process (run i of each precision back to back,
so a busy machine slows all three alike), measures each one's peak resident memory in a fresh
process, and reports the quality gate's figures next to the speed: those recorded in the
manifest where the export offers the precision, else computed here (`--no-gate` skips that).
The int8 graph is written beside the export (`encoder.int8.onnx`) when it is missing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from focsam_onnx.bench import system_info
from focsam_onnx.engine.encoder_runtime import open_encoder
from focsam_onnx.engine.graph_spec import ENCODER, PRECISIONS


def _peak_child(model_dir: str, precision: str, threads: int, queue) -> None:
    encoder = open_encoder(Path(model_dir), precision, threads)
    encoder.run(np.zeros(ENCODER.inputs[0].shape, np.float32))
    queue.put(system_info.peak_rss_mb())


def peak_mb(model_dir: Path, precision: str, threads: int) -> float:
    """Peak RSS of a fresh process that opens the encoder and runs it once."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_peak_child, args=(str(model_dir), precision, threads, queue))
    child.start()
    peak = queue.get()
    child.join()
    return peak


def interleaved_seconds(model_dir: Path, threads: int, repeats: int) -> dict[str, list[float]]:
    encoders = {p: open_encoder(model_dir, p, threads) for p in PRECISIONS}
    x = np.random.default_rng(0).standard_normal(ENCODER.inputs[0].shape).astype(np.float32)
    for encoder in encoders.values():
        encoder.run(x)  # warm-up
    times: dict[str, list[float]] = {p: [] for p in encoders}
    for _ in range(repeats):
        for precision, encoder in encoders.items():
            start = time.perf_counter()
            encoder.run(x)
            times[precision].append(time.perf_counter() - start)
    return times


def gate_figures(model_dir: Path, threads: int, compute: bool) -> dict[str, dict]:
    import dataclasses

    from focsam_onnx.engine.loaded_model import load_model_dir, read_manifest
    from focsam_onnx.export.manifest import file_entry
    from focsam_onnx.export.quality_gate import gate_model

    manifest = read_manifest(model_dir)
    out = {p: {**dataclasses.asdict(r.gate), "source": "manifest"}
           for p, r in manifest.encoder_precisions.items() if r.gate is not None}
    missing = [p for p in PRECISIONS if p != "fp32" and p not in out]
    if compute and missing:
        files = {**manifest.files, PRECISIONS["int8"].filename:
                 file_entry(model_dir / PRECISIONS["int8"].filename)}
        model = load_model_dir(model_dir, dataclasses.replace(manifest, files=files), threads)
        for precision in missing:
            report = gate_model(model, precision)
            out[precision] = {**dataclasses.asdict(report.figures()), "passed": report.passed,
                              "source": "computed"}
    return out


def run(model_dir: Path, threads: int, repeats: int, gate: bool) -> dict:
    from focsam_onnx.export.quantize import quantize_encoder

    if not (model_dir / PRECISIONS["int8"].filename).is_file():
        quantize_encoder(model_dir)
    peaks = {p: peak_mb(model_dir, p, threads) for p in PRECISIONS}
    times = interleaved_seconds(model_dir, threads, repeats)
    median = {p: statistics.median(t) for p, t in times.items()}
    return {"model": str(model_dir), "threads": threads, "repeats": repeats,
            "seconds": times, "median_s": median,
            "vs_ort_fp32": {p: median[p] / median["fp32"] for p in median},
            "peak_mb": peaks, "gate": gate_figures(model_dir, threads, gate),
            "machine": system_info.machine_info(threads)}


def markdown(result: dict) -> str:
    rows = ["| encoder | runtime | median s | vs ORT fp32 | peak MB | min cosine | max abs "
            "| mask IoU mean / min |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for p, spec in PRECISIONS.items():
        g = result["gate"].get(p)
        quality = ("– | – | –" if g is None else
                   f"{g['min_cosine']:.6f} | {g['max_abs']:.3g} | "
                   f"{g['mean_mask_iou']:.4f} / {g['min_mask_iou']:.4f}")
        rows.append(f"| {p} | {spec.runtime} | {result['median_s'][p]:.2f} | "
                    f"{result['vs_ort_fp32'][p]:.2f} | {result['peak_mb'][p]:.0f} | {quality} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported model directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gate", action="store_true",
                        help="do not compute gate figures the manifest lacks")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.model, args.threads, args.repeats, not args.no_gate)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
