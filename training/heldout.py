"""Write held-out generated scenes as `folder` datasets for `focsam-onnx evaluate`.

    python -m focsam_onnx.training.heldout --out data/demo_heldout --scenes 40

The scenes come from the held-out seed stream, which training never draws from. Each object
becomes one sample (`images/<stem>.png` beside `masks/<stem>.png`, 255 = object; the image is
repeated per object, since the folder layout pairs one mask with one image), under
`compact/` (ellipses and polygons, holed or not) and `thin/` (bars and rings), so the two kinds
are scored apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from focsam_onnx.training.scenes import (
    COMPACT_KINDS,
    STREAM_HELDOUT,
    Scene,
    make_scene,
    scene_seed,
)

HELDOUT_SEED = 0


def heldout_scene(index: int, seed: int = HELDOUT_SEED) -> Scene:
    """Held-out scene `index` (the stream the evaluation and the tests use)."""
    return make_scene(scene_seed(STREAM_HELDOUT, seed, index))


def write_folder_datasets(out: str | Path, scenes: int, seed: int = HELDOUT_SEED) -> dict[str, int]:
    """Write `out/compact` and `out/thin` for held-out scenes 0..scenes-1; returns the counts."""
    out = Path(out)
    counts = {"compact": 0, "thin": 0}
    for group in counts:
        (out / group / "images").mkdir(parents=True, exist_ok=True)
        (out / group / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(scenes):
        scene = heldout_scene(index, seed)
        bgr = np.ascontiguousarray(scene.image[..., ::-1])
        for k, kind in enumerate(scene.kinds):
            group = "compact" if kind in COMPACT_KINDS else "thin"
            stem = f"s{index:04d}_o{k}_{kind}"
            cv2.imwrite(str(out / group / "images" / f"{stem}.png"), bgr)
            cv2.imwrite(str(out / group / "masks" / f"{stem}.png"),
                        scene.masks[k].astype(np.uint8) * 255)
            counts[group] += 1
    return counts


def write_example(index: int, out: str | Path, seed: int = HELDOUT_SEED) -> Path:
    """Held-out scene `index` as `out/demo_scene_<index>.png` (examples/ ships a few)."""
    path = Path(out) / f"demo_scene_{index:04d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(heldout_scene(index, seed).image[..., ::-1]))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED)
    args = parser.parse_args(argv)
    counts = write_folder_datasets(args.out, args.scenes, args.seed)
    print(f"{args.out}: {counts['compact']} compact and {counts['thin']} thin objects "
          f"from {args.scenes} held-out scenes")


if __name__ == "__main__":
    main()
