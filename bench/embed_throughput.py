"""Images per minute of `embed`: this process's encoder vs a pool of local Ray workers.

Run `python bench/embed_throughput.py --model exported/vit_b`. Both sides run the same driver
loop (`engine/embed.py`: read, hash, encode, cache write) on the same synthetic 480x640 images
into fresh cache folders, in alternating rounds so that the machine's drift hits both alike; the
Ray side is the code path a cluster runs (a local instance of `--ray-cpus` CPUs, `--workers`
actors of one CPU each, started before the clock). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from focsam_onnx.bench import system_info
from focsam_onnx.cluster.ray_encoder import EncoderPool, connect
from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.embed import embed_images, encoding_engine, local_encoder
from focsam_onnx.evaluation.datasets import find_images

SCENE_HW = (480, 640)


def write_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"scene{i:03d}.png"),
                    rng.integers(0, 256, (*SCENE_HW, 3), dtype=np.uint8))
    return find_images([folder])


def images_per_minute(paths: list[Path], model_id: str, encoder, scratch: Path) -> float:
    cache = EmbeddingCache(cache_dir=tempfile.mkdtemp(dir=scratch))
    start = time.perf_counter()
    report = embed_images(paths, cache, model_id, encoder)
    assert report.encoded == len(paths), report.failures
    return len(paths) / (time.perf_counter() - start) * 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported model folder")
    parser.add_argument("--images", type=int, default=6, help="images per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers, 1 CPU each")
    parser.add_argument("--threads", type=int, default=2, help="single-process ORT threads")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    engine = encoding_engine(args.model, threads=args.threads)
    model_id = engine.model.model_id
    rates: dict[str, list[float]] = {"single_process": [], "ray": []}
    with tempfile.TemporaryDirectory() as scratch, \
            connect("local", num_cpus=args.workers, object_store_bytes=256 << 20) as ray:
        paths = write_images(Path(scratch), args.images)
        start = time.perf_counter()
        pool = EncoderPool(ray, args.model, model_id, workers=args.workers, cpus=1)
        startup_s = time.perf_counter() - start
        try:
            for _ in range(args.rounds):
                rates["single_process"].append(
                    images_per_minute(paths, model_id, local_encoder(engine), Path(scratch)))
                rates["ray"].append(images_per_minute(paths, model_id, pool, Path(scratch)))
        finally:
            pool.close()
    medians = {name: statistics.median(r) for name, r in rates.items()}
    result = {"model": engine.model.variant, "images": args.images, "rounds": args.rounds,
              "workers": args.workers, "single_process_threads": args.threads,
              "images_per_minute": rates, "median_images_per_minute": medians,
              "ray_vs_single_process": medians["ray"] / medians["single_process"],
              "ray_worker_startup_s": startup_s, "machine": system_info.machine_info(args.threads),
              "libraries": system_info.library_versions(), "date": system_info.now_iso()}
    print(f"| {engine.model.variant}: embed, {args.images} images of {SCENE_HW[1]}x"
          f"{SCENE_HW[0]} x {args.rounds} rounds | images/min (median) |")
    print("|---|---:|")
    print(f"| single process, {args.threads} threads | {medians['single_process']:.2f} |")
    print(f"| Ray, {args.workers} local workers x 1 CPU | {medians['ray']:.2f} |")
    print(f"ray / single process: {result['ray_vs_single_process']:.3f}; "
          f"worker start-up {startup_s:.1f} s (not in the rates)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
