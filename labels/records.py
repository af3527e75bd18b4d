"""A labels folder read back: its classes and, per image, the objects' masks and classes.

The folder is what `focsam-onnx serve --out` writes: `<image name>/annotations.json` per image
(COCO with one image, RLE masks, `category_id` per object) and `classes.txt` (the class set,
one name a line, category id = line number). Read here without the server, so that exports
need neither the page nor a model.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focsam_onnx.errors import DamagedData, NotFound, require

ANNOTATIONS = "annotations.json"
CLASSES = "classes.txt"
DEFAULT_CLASSES = ("object",)  # the one class of labels made before classes existed


def rle_module():
    return require("pycocotools.mask", "COCO masks", "serve")


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE -> (H, W) bool."""
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return rle_module().decode(rle).astype(bool)


@dataclass(frozen=True)
class LabelledObject:
    id: int  # the object's id in its image (instance number)
    category_id: int  # 1-based index into the folder's classes
    rle: dict  # COCO RLE {"size": [H, W], "counts": str}

    def mask(self) -> np.ndarray:
        """(H, W) bool."""
        return decode_rle(self.rle)


@dataclass(frozen=True)
class LabelledImage:
    file_name: str
    width: int
    height: int
    objects: tuple[LabelledObject, ...]  # by id: later ones are drawn over earlier ones


@dataclass(frozen=True)
class LabelSet:
    classes: tuple[str, ...]  # category id i + 1 is classes[i]
    images: tuple[LabelledImage, ...]  # by file name; images with no object are left out
    damaged: dict[str, str]  # image -> why its record could not be read (left out)


def read_classes(root: Path) -> tuple[str, ...] | None:
    """The class set saved in `root/classes.txt`, or None when there is none."""
    path = root / CLASSES
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(n for n in names if n) or None


def read_labels(root: str | Path) -> LabelSet:
    root = Path(root)
    if not root.is_dir():
        raise NotFound(f"no labels folder at {root}")
    images, damaged, categories = [], {}, {}
    for path in sorted(root.glob(f"*/{ANNOTATIONS}")):
        try:
            image, names = _read_image(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            damaged[path.parent.name] = f"{path} is unreadable ({type(err).__name__}: {err})"
            continue
        categories.update(names)
        if image.objects:
            images.append(image)
    classes = read_classes(root) or _classes_from(categories)
    for image in images:
        for obj in image.objects:
            if not 1 <= obj.category_id <= len(classes):
                raise DamagedData(f"{image.file_name}: object {obj.id} has category "
                                  f"{obj.category_id}, not one of the {len(classes)} classes")
    return LabelSet(classes, tuple(images), damaged)


def _read_image(path: Path) -> tuple[LabelledImage, dict[int, str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    (entry,) = data["images"]
    objects = tuple(sorted((LabelledObject(int(a["id"]), int(a.get("category_id", 1)),
                                           dict(a["segmentation"]))
                            for a in data["annotations"]), key=lambda o: o.id))
    names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    return LabelledImage(path.parent.name, int(entry["width"]), int(entry["height"]),
                         objects), names


def _classes_from(categories: dict[int, str]) -> tuple[str, ...]:
    """Classes from the records' COCO categories (ids 1..n), for a folder with no classes.txt."""
    if not categories:
        return DEFAULT_CLASSES
    return tuple(categories.get(i, f"class_{i}") for i in range(1, max(categories) + 1))
