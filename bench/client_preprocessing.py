"""How far SAM clients' preprocessing moves the embeddings from upstream FocSAM's.

Upstream pads the image to a multiple of 32, then resizes (torch bilinear, no antialias) to
longest side 1024; SAM clients resize the image itself (PIL bilinear, as segment-anything and
samexporter do) and the SAM-compatible encoder pads after. For one exported model directory
with the pair, this prints per image size the native embeddings' RMS and the max / mean
absolute difference of the client path's embeddings from them.

    python bench/client_preprocessing.py --model exported/tiny_sam
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from focsam_onnx.engine.embed import encoding_engine
from focsam_onnx.engine.predictor import SamPredictor

SIZES = ((240, 320), (375, 500), (1000, 1500), (1024, 683), (2000, 1333))
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes.png"


def measure(model_dir: Path, image_path: Path = EXAMPLE) -> list[dict]:
    engine = encoding_engine(model_dir)
    predictor = SamPredictor(model_dir)
    base = cv2.imread(str(image_path))
    rows = []
    for height, width in SIZES:
        bgr = cv2.resize(base, (width, height), interpolation=cv2.INTER_LINEAR)
        native = engine.open_image(bgr).embeddings
        predictor.set_image(bgr, image_format="BGR")
        diff = np.abs(predictor.get_image_embedding() - native)
        rows.append({"size": f"{height}x{width}", "rms": float(np.sqrt(np.mean(native ** 2))),
                     "max_abs": float(diff.max()), "mean_abs": float(diff.mean())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="an export made with --sam-compatible")
    args = parser.parse_args(argv)
    print("| image (H x W) | native RMS | max abs diff | mean abs diff | mean / RMS |")
    print("|---|---|---|---|---|")
    for r in measure(args.model):
        print(f"| {r['size']} | {r['rms']:.4f} | {r['max_abs']:.4f} | {r['mean_abs']:.4f} | "
              f"{r['mean_abs'] / r['rms']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
