"""Pascal VOC segmentation: `SegmentationClass/` and `SegmentationObject/` palette PNGs.

Per image, a class PNG (pixel = the class's 1-based id, 0 background) and an object PNG (pixel =
the object's 1-based index in the image, 0 background), both in VOC's colour palette, with
`class_names.txt` (background first) and `ImageSets/Segmentation/default.txt`. A pixel holds
one object: where masks overlap, the later object (higher id) wins. VOC's 255 (the "void"
border drawn around objects) is not written: every pixel is an object or background. At most
255 classes and 255 objects an image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from focsam_onnx.errors import TooLarge
from focsam_onnx.labels.records import LabelledImage, LabelSet

MAX_INDEX = 255


def voc_palette() -> list[int]:
    """VOC's 256 colours, flat RGB: index i's bits spread over the channels' high bits."""
    palette = []
    for index in range(256):
        rgb, bits = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        palette.extend(rgb)
    return palette


def voc_maps(image: LabelledImage) -> tuple[np.ndarray, np.ndarray]:
    """(class map, object map), each (H, W) uint8."""
    if len(image.objects) > MAX_INDEX:
        raise TooLarge(f"{image.file_name} has {len(image.objects)} objects; VOC's object PNG "
                       f"holds {MAX_INDEX}")
    classes = np.zeros((image.height, image.width), np.uint8)
    objects = np.zeros_like(classes)
    for index, obj in enumerate(image.objects, start=1):
        mask = obj.mask()
        classes[mask] = obj.category_id
        objects[mask] = index
    return classes, objects


def _save_png(values: np.ndarray, path: Path, palette: list[int]) -> None:
    png = Image.fromarray(values, mode="P")
    png.putpalette(palette)
    png.save(path)


def write_voc(labels: LabelSet, dest: Path) -> list[Path]:
    if len(labels.classes) > MAX_INDEX - 1:
        raise TooLarge(f"{len(labels.classes)} classes; VOC's class PNG holds {MAX_INDEX - 1}")
    palette, written = voc_palette(), []
    for folder in ("SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    for image in labels.images:
        stem = Path(image.file_name).stem
        for folder, values in zip(("SegmentationClass", "SegmentationObject"),
                                  voc_maps(image)):
            _save_png(values, dest / folder / f"{stem}.png", palette)
            written.append(dest / folder / f"{stem}.png")
    names = dest / "class_names.txt"
    names.write_text("".join(f"{n}\n" for n in ("background", *labels.classes)),
                     encoding="utf-8")
    split = dest / "ImageSets/Segmentation/default.txt"
    split.write_text("".join(f"{Path(i.file_name).stem}\n" for i in labels.images),
                     encoding="utf-8")
    return [*written, names, split]
