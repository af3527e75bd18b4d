"""sam_decoder.onnx as SAM tools run it: ours with the folded attentions against ours as written
and segment-anything's official export, for the same random ViT-B weights, interleaved.

    python -m focsam_onnx.bench.sam_pair_decoder --repeats 40 --json sam_pair_decoder.json

The feeds are what X-AnyLabeling's SAM runner sends: the clicks so far plus the padding point,
no mask input, all four masks upsampled inside the graph to the image (480x640 by default).
Each graph's mask logits are checked against the official export's before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from focsam_onnx.bench.baselines import export_sam_onnx_decoder
from focsam_onnx.bench.measure import interleaved, median_ratio, summarize
from focsam_onnx.export.sam_pair import sam_decoder_graph
from focsam_onnx.models.checkpoint import load_checkpoint
from focsam_onnx.models.segment_anything_compat import import_segment_anything

OPSET = 17  # the pair's (onnxruntime >= 1.16 reads it), and segment-anything's script's


def random_vit_b(seed: int):
    """An official segment-anything ViT-B with random weights, every tensor non-trivial."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = import_segment_anything().sam_model_registry["vit_b"]().eval()
        with torch.no_grad():
            for p in sam.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return sam


def graphs(folder: Path, seed: int, hw: tuple[int, int]) -> dict[str, Path]:
    sam = random_vit_b(seed)
    torch.save(sam.state_dict(), folder / "sam_vit_b.pth")
    model, _ = load_checkpoint(folder / "sam_vit_b.pth")
    paths = {"segment-anything": export_sam_onnx_decoder(sam, folder / "official.onnx",
                                                         orig_hw=hw)}
    for name, rewrite in (("ours, folded", True), ("ours, as written", False)):
        paths[name] = folder / f"{'folded' if rewrite else 'plain'}.onnx"
        onnx.save(sam_decoder_graph(model, OPSET, rewrite), str(paths[name]))
    return paths


def feeds(points: int, hw: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    clicks = rng.uniform(0, 1023, (points - 1, 2))
    coords = np.concatenate([clicks, np.zeros((1, 2))])[None].astype(np.float32)
    labels = np.concatenate([rng.integers(0, 2, points - 1), [-1]])[None].astype(np.float32)
    return {"image_embeddings": rng.standard_normal((1, 256, 64, 64)).astype(np.float32),
            "point_coords": coords, "point_labels": labels,
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(hw, np.float32)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[6, 12],
                        help="points per prompt, the padding point included")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    hw = (args.height, args.width)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    results = []
    with tempfile.TemporaryDirectory() as folder:
        paths = graphs(Path(folder), args.seed, hw)
        sessions = {name: ort.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
                    for name, path in paths.items()}
        for points in args.points:
            feed = feeds(points, hw, args.seed)
            masks = {name: s.run(["masks"], feed)[0] for name, s in sessions.items()}
            reference = masks["segment-anything"]
            gaps = {name: float(np.abs(m - reference).max()) for name, m in masks.items()}
            runs = interleaved([lambda s=s, f=feed: s.run(None, f) for s in sessions.values()],
                               args.warmup, args.repeats)
            timed = dict(zip(sessions, runs))
            results.append({
                "points": points, "image_hw": list(hw), "threads": args.threads,
                "max_abs_mask_logit_gap_to_official": gaps,
                "ms": {name: summarize(t) for name, t in timed.items()},
                "folded_vs_official": median_ratio(timed["ours, folded"],
                                                   timed["segment-anything"]),
                "folded_vs_as_written": median_ratio(timed["ours, folded"],
                                                     timed["ours, as written"])})
    print(f"{'points':>6} {'graph':<18} {'p50 ms':>8} {'p90 ms':>8} {'gap to official':>16}")
    for r in results:
        for name, ms in r["ms"].items():
            gap = r["max_abs_mask_logit_gap_to_official"][name]
            print(f"{r['points']:>6} {name:<18} {ms['p50_ms']:>8.2f} {ms['p90_ms']:>8.2f} "
                  f"{gap:>16.2e}")
        print(f"{'':>6} folded / official {r['folded_vs_official']:.3f}, folded / as written "
              f"{r['folded_vs_as_written']:.3f} (median of interleaved rounds)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
