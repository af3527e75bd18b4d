"""COCO instance segmentation: one `annotations.json` for the folder.

An object's `segmentation` is its parts' outer rings as polygons (pixel-edge coordinates, see
`outline.py`) unless it has a hole, which COCO polygons cannot hold (pycocotools fills and
merges them): such an object keeps its exact RLE. `rle=True` writes every object as RLE.
`area` and `bbox` are the saved mask's (pycocotools), whatever the segmentation's form.
"""

from __future__ import annotations

import json
from pathlib import Path

from focsam_onnx.labels.outline import outline
from focsam_onnx.labels.records import LabelSet, rle_module


def coco_dataset(labels: LabelSet, rle: bool = False) -> dict:
    coco = rle_module()
    dataset = {"info": {"description": "labels made with focsam-onnx serve"},
               "images": [], "annotations": [],
               "categories": [{"id": i + 1, "name": name, "supercategory": ""}
                              for i, name in enumerate(labels.classes)]}
    for image_id, image in enumerate(labels.images, start=1):
        dataset["images"].append({"id": image_id, "file_name": image.file_name,
                                  "width": image.width, "height": image.height})
        for obj in image.objects:
            encoded = dict(obj.rle, counts=obj.rle["counts"].encode("ascii"))
            segmentation = obj.rle
            if not rle:
                parts = outline(obj.mask())
                if parts and not any(p.holes for p in parts):
                    segmentation = [p.outer.ravel().tolist() for p in parts]
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id,
                "category_id": obj.category_id, "iscrowd": 0, "segmentation": segmentation,
                "area": int(coco.area(encoded)),
                "bbox": [float(v) for v in coco.toBbox(encoded)], "object_id": obj.id})
    return dataset


def write_coco(labels: LabelSet, dest: Path, rle: bool = False) -> list[Path]:
    path = dest / "annotations.json"
    path.write_text(json.dumps(coco_dataset(labels, rle)), encoding="utf-8")
    return [path]
