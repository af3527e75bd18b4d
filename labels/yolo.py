"""YOLO segmentation (Ultralytics): `labels/<stem>.txt` per image and `data.yaml`.

Each object is one line, `class x1 y1 x2 y2 ...`: the class's 0-based index, then its outline
normalised by the image's width and height (pixel-edge coordinates / size, as Ultralytics'
own COCO converter writes them). The format has one polygon per object and no holes: the
parts of a multi-part object are joined by zero-width bridges into one ring, and holes are
filled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from focsam_onnx.labels.outline import bridge, outline
from focsam_onnx.labels.records import LabelSet


def yolo_line(category_id: int, ring: np.ndarray, width: int, height: int) -> str:
    normalised = (ring / np.array([width, height])).ravel()
    return " ".join([str(category_id - 1), *(f"{v:.6f}" for v in normalised)])


def write_yolo(labels: LabelSet, dest: Path) -> list[Path]:
    folder = dest / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image in labels.images:
        lines = []
        for obj in image.objects:
            parts = outline(obj.mask())
            if parts:
                lines.append(yolo_line(obj.category_id, bridge(parts), image.width,
                                       image.height))
        path = folder / f"{Path(image.file_name).stem}.txt"
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        written.append(path)
    # JSON strings are YAML's double-quoted scalars: any class name is written safely.
    names = "".join(f"  {i}: {json.dumps(name)}\n" for i, name in enumerate(labels.classes))
    data = dest / "data.yaml"
    data.write_text(f"path: .\ntrain: images\nval: images\nnames:\n{names}", encoding="utf-8")
    return [*written, data]
