"""LabelMe: one JSON per image, named after it, to sit beside the image.

Each part of an object is a `polygon` shape labelled with the object's class, and the parts of
one object share its `group_id` (the object's id). Points are pixel-edge coordinates (as COCO's,
so LabelMe-to-COCO converters that copy the points keep the masks). LabelMe polygons have no
holes: holes are filled.
"""

from __future__ import annotations

import json
from pathlib import Path

from focsam_onnx.labels.outline import outline
from focsam_onnx.labels.records import LabelledImage, LabelSet

LABELME_VERSION = "5.5.0"  # the file format LabelMe 5.5 writes and later versions read


def labelme_json(image: LabelledImage, classes: tuple[str, ...]) -> dict:
    shapes = [{"label": classes[obj.category_id - 1], "points": part.outer.tolist(),
               "group_id": obj.id, "description": "", "shape_type": "polygon", "flags": {},
               "mask": None}
              for obj in image.objects for part in outline(obj.mask())]
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes,
            "imagePath": image.file_name, "imageData": None,
            "imageHeight": image.height, "imageWidth": image.width}


def write_labelme(labels: LabelSet, dest: Path) -> list[Path]:
    written = []
    for image in labels.images:
        path = dest / f"{Path(image.file_name).stem}.json"
        path.write_text(json.dumps(labelme_json(image, labels.classes), indent=1),
                        encoding="utf-8")
        written.append(path)
    return written
