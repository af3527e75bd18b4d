"""Bytes the labelling page receives for a large image: per click, and the object list.

Run `python bench/serve_payloads.py [--width 4000 --height 3000 --objects 15] [--json out.json]`.
Byte counts, not times: deterministic, so any machine gives the same figures. Masks of two
kinds on the image: compact objects (discs and ellipses of 1-12 % of the image, what a trained
model draws) and noise (each pixel on with probability 1/2: the worst case, what random
weights draw). For each it sizes the JSON of one click answer's mask and of the object list
(`GET /api/images/{name}/objects`), before (row-major bits of the whole image, base64) and
after (the bounding box as a 1-bit PNG, at most `PREVIEW_PIXELS`, base64).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from focsam_onnx.serve.payloads import PREVIEW_PIXELS, mask_json


def bits_json(mask: np.ndarray) -> dict:
    """The page's mask format before bounded payloads: every pixel as one bit."""
    return {"format": "bits", "height": mask.shape[0], "width": mask.shape[1],
            "bits": base64.b64encode(np.packbits(mask.ravel()).tobytes()).decode()}


def masks(kind: str, width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if kind == "noise":
            out.append(rng.random((height, width)) > 0.5)
            continue
        mask = np.zeros((height, width), np.uint8)
        centre = (int(rng.integers(width // 5, 4 * width // 5)),
                  int(rng.integers(height // 5, 4 * height // 5)))
        axes = (int(rng.uniform(0.05, 0.25) * width), int(rng.uniform(0.05, 0.25) * height))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        out.append(mask.astype(bool))
    return out


def sizes(objects: list[np.ndarray], encode) -> tuple[int, int]:
    """(largest click answer's mask JSON, the object list's JSON) in bytes."""
    entries = [{"object_id": i, "mask": encode(m)} for i, m in enumerate(objects, start=1)]
    per_click = max(len(json.dumps(e["mask"])) for e in entries)
    return per_click, len(json.dumps({"objects": entries}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--objects", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for kind in ("compact", "noise"):
        objects = masks(kind, args.width, args.height, args.objects)
        for name, encode in (("before (bits)", bits_json), ("after (crop PNG)", mask_json)):
            click, listing = sizes(objects, encode)
            rows.append({"masks": kind, "format": name, "click_bytes": click,
                         "object_list_bytes": listing})
    print(f"{args.width} x {args.height}, {args.objects} objects; preview cap "
          f"{PREVIEW_PIXELS:,} pixels")
    print(f"{'masks':8} {'format':18} {'bytes per click':>16} {'object list bytes':>18}")
    for r in rows:
        print(f"{r['masks']:8} {r['format']:18} {r['click_bytes']:>16,} "
              f"{r['object_list_bytes']:>18,}")
    if args.json:
        args.json.write_text(json.dumps({"width": args.width, "height": args.height,
                                         "objects": args.objects, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
