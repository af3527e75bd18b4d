"""The saved labels: per image a folder of 255/0 mask PNGs and a COCO-style annotations.json.

`<out>/<image file name>/annotations.json` is the source of truth: COCO with one image and one
annotation per object (pycocotools RLE, bbox, area) plus the prompts that made the mask, so a
session can be re-created. Each object's PNG beside it is derived from the record, the way git
writes objects before it moves a ref: a save writes the new mask under a new name
(`object_<id>_v<version>.png`), then the record naming it (one atomic rename), then removes the
old file. A crash at any moment leaves the record and the PNG it names in agreement, at worst
with an unreferenced PNG that the next start removes. A record the server cannot read is
reported for its image alone, kept as it is, and never overwritten.
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from focsam_onnx.engine.atomic_io import atomic_write, probe_writable
from focsam_onnx.engine.prompts import Prompt, prompts_from_json, prompts_to_json
from focsam_onnx.errors import Conflict, DamagedData, InvalidInput, NotFound, require
from focsam_onnx.labels.records import ANNOTATIONS, CLASSES, DEFAULT_CLASSES, read_classes
from focsam_onnx.serve.strokes import Stroke

FORMAT_VERSION = 1
PROGRESS = "progress.json"  # {"done": [image names]}: the images marked done


def _rle_module():
    return require("pycocotools.mask", "saving COCO masks", "serve")


@dataclass(frozen=True)
class SavedObject:
    """One labelled object: the prompts that made it (clicks and boxes, in order) and its mask
    as RLE."""

    id: int
    prompts: tuple[Prompt, ...]
    predicted_iou: float
    refine_at: int | None
    model_id: str
    rle: dict  # COCO RLE {"size": [H, W], "counts": str}, column-major as COCO defines it
    area: int
    bbox: tuple[float, float, float, float]  # x, y, width, height
    version: int = 1  # +1 per save; names the PNG this record owns
    category_id: int = 1  # 1-based index into the labels folder's classes
    strokes: tuple[Stroke, ...] = ()  # brush / eraser touch-ups, applied after the prompts

    def to_coco(self) -> dict:
        return {"id": self.id, "image_id": 1, "category_id": self.category_id, "iscrowd": 0,
                "segmentation": self.rle, "area": self.area, "bbox": list(self.bbox),
                "predicted_iou": self.predicted_iou,
                "prompts": prompts_to_json(self.prompts),
                "refine_at": self.refine_at, "model_id": self.model_id,
                "mask_file": self.mask_file, "version": self.version,
                "strokes": [s.to_json() for s in self.strokes]}

    @classmethod
    def from_coco(cls, entry: dict) -> SavedObject:
        # "clicks": the name before boxes joined the prompts (the same click objects)
        prompts = prompts_from_json(entry["prompts"] if "prompts" in entry else entry["clicks"])
        return cls(int(entry["id"]), prompts, float(entry["predicted_iou"]), entry["refine_at"],
                   str(entry["model_id"]), dict(entry["segmentation"]), int(entry["area"]),
                   tuple(float(v) for v in entry["bbox"]), int(entry.get("version", 0)),
                   int(entry.get("category_id", 1)),
                   tuple(Stroke.from_json(s) for s in entry.get("strokes", [])))

    @property
    def mask_file(self) -> str:
        """The PNG this record owns (version 0: the name before masks were versioned)."""
        if self.version == 0:
            return f"object_{self.id}.png"
        return f"object_{self.id}_v{self.version}.png"

    def mask(self) -> np.ndarray:
        """(H, W) bool."""
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            return _rle_module().decode(self.rle).astype(bool)


@dataclass
class _ImageLabels:
    width: int
    height: int
    next_id: int
    objects: dict[int, SavedObject]
    deleted: dict[int, SavedObject] = field(default_factory=dict)  # restorable; no PNG


class AnnotationStore:
    """Reads and writes the labels under `out`; safe to call from several threads."""

    def __init__(self, out: str | Path, classes: tuple[str, ...] | None = None):
        self.out = Path(out)
        probe_writable(self.out, "the labels folder (--out)")
        self.classes = self._resolve_classes(classes)
        self._lock = threading.Lock()
        self._done = self._read_done()
        self._images: dict[str, _ImageLabels] = {}

    def folder(self, image: str) -> Path:
        return self.out / image

    def objects(self, image: str) -> list[SavedObject]:
        with self._lock:
            labels = self._load(image)
            return [] if labels is None else sorted(labels.objects.values(), key=lambda o: o.id)

    def get(self, image: str, object_id: int) -> SavedObject:
        with self._lock:
            labels = self._load(image)
            if labels is None or object_id not in labels.objects:
                raise NotFound(f"image {image!r} has no saved object {object_id}")
            return labels.objects[object_id]

    def new_object_id(self, image: str, height: int, width: int) -> int:
        """A fresh id for `image` (ids are never reused, even after a delete)."""
        with self._lock:
            labels = self._load(image) or _ImageLabels(width, height, 1, {})
            self._images[image] = labels
            object_id, labels.next_id = labels.next_id, labels.next_id + 1
            return object_id

    def _resolve_classes(self, given: tuple[str, ...] | None) -> tuple[str, ...]:
        """The class set: the saved one (`classes.txt`), which `given` may extend at its end
        but not reorder (the records hold class ids); written back when it changes."""
        saved = read_classes(self.out)
        if given is None:
            return saved or DEFAULT_CLASSES
        if len(set(given)) != len(given) or not all(name.strip() for name in given):
            raise InvalidInput(f"the class names must be distinct and not empty: {given}")
        if saved is not None and given[:len(saved)] != saved:
            raise Conflict(f"{self.out} is labelled with the classes {', '.join(saved)}; "
                           "give them in that order (new ones may follow)")
        if given != saved:
            atomic_write(self.out / CLASSES, "".join(f"{name}\n" for name in given))
        return given

    def _read_done(self) -> set[str]:
        path = self.out / PROGRESS
        try:
            return set(json.loads(path.read_text())["done"]) if path.is_file() else set()
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DamagedData(f"{path} is unreadable ({type(err).__name__}: {err}); fix or "
                              "remove it (it only lists the images marked done)") from None

    def is_done(self, image: str) -> bool:
        return image in self._done

    def set_done(self, image: str, done: bool) -> None:
        """Mark `image` done (or not); kept in `progress.json`, so it survives restarts."""
        with self._lock:
            self._done = self._done | {image} if done else self._done - {image}
            atomic_write(self.out / PROGRESS, json.dumps({"done": sorted(self._done)},
                                                         indent=1))

    def categories(self) -> list[dict]:
        return [{"id": i + 1, "name": name} for i, name in enumerate(self.classes)]

    def save(self, image: str, object_id: int, mask: np.ndarray, prompts: tuple[Prompt, ...],
             predicted_iou: float, refine_at: int | None, model_id: str,
             category_id: int | None = None, strokes: tuple[Stroke, ...] = ()) -> SavedObject:
        """Write object `object_id` of `image`: its mask under a new name, then the record that
        names it, then the old mask's removal (see the module docstring). `category_id`: the
        object's class (default: the one it has, or the first)."""
        if category_id is not None:
            self.check_category(category_id)
        rle = _rle_module()
        height, width = mask.shape
        encoded = rle.encode(np.asfortranarray(mask.astype(np.uint8)))
        ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
        if not ok:
            raise RuntimeError(f"could not encode the mask of object {object_id} as PNG")
        with self._lock:
            labels = self._load(image) or _ImageLabels(width, height, object_id + 1, {})
            if (labels.height, labels.width) != (height, width):
                raise InvalidInput(f"mask of {width}x{height} for image {image!r} of "
                                   f"{labels.width}x{labels.height}")
            old = labels.objects.get(object_id)
            obj = SavedObject(object_id, tuple(prompts), float(predicted_iou), refine_at,
                              model_id, {"size": [height, width],
                                         "counts": encoded["counts"].decode("ascii")},
                              int(rle.area(encoded)),
                              tuple(float(v) for v in rle.toBbox(encoded)),
                              (old.version if old else 0) + 1,
                              category_id or (old.category_id if old else 1), tuple(strokes))
            folder = self.folder(image)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / obj.mask_file, png.tobytes())
            updated = _ImageLabels(width, height, max(labels.next_id, object_id + 1),
                                   {**labels.objects, object_id: obj},
                                   {i: o for i, o in labels.deleted.items() if i != object_id})
            self._write(image, updated)
            self._images[image] = updated
            if old is not None:
                (folder / old.mask_file).unlink(missing_ok=True)
        return obj

    def set_category(self, image: str, object_id: int, category_id: int) -> SavedObject:
        """Change a saved object's class. The mask is unchanged, but the version moves on (its
        PNG written again under the new version's name, as a save does), so that pages
        polling the versions see the change."""
        self.check_category(category_id)
        with self._lock:
            labels = self._load(image)
            if labels is None or object_id not in labels.objects:
                raise NotFound(f"image {image!r} has no saved object {object_id}")
            old = labels.objects[object_id]
            obj = replace(old, category_id=category_id, version=old.version + 1)
            self._write_png(image, obj)
            updated = replace(labels, objects={**labels.objects, object_id: obj})
            self._write(image, updated)
            self._images[image] = updated
            (self.folder(image) / old.mask_file).unlink(missing_ok=True)
        return obj

    def _write_png(self, image: str, obj: SavedObject) -> None:
        """The PNG `obj` names, from its RLE."""
        ok, png = cv2.imencode(".png", obj.mask().astype(np.uint8) * 255)
        if not ok:
            raise RuntimeError(f"could not encode the mask of object {obj.id} as PNG")
        atomic_write(self.folder(image) / obj.mask_file, png.tobytes())

    def check_category(self, category_id: int) -> None:
        if not 1 <= category_id <= len(self.classes):
            raise InvalidInput(f"class {category_id} is not one of 1..{len(self.classes)}")

    def delete(self, image: str, object_id: int) -> None:
        """Delete object `object_id`: the record first (the truth; it keeps the object among
        its deleted ones, so that `restore` can bring it back), then its PNG. Unknown ids are
        a no-op."""
        with self._lock:
            labels = self._load(image)
            if labels is None or object_id not in labels.objects:
                return
            old = labels.objects[object_id]
            updated = replace(labels, objects={i: o for i, o in labels.objects.items()
                                               if i != object_id},
                              deleted={**labels.deleted, object_id: old})
            self._write(image, updated)
            self._images[image] = updated
            (self.folder(image) / old.mask_file).unlink(missing_ok=True)

    def restore(self, image: str, object_id: int) -> SavedObject:
        """Bring a deleted object back, as it was when deleted (its PNG written again)."""
        with self._lock:
            labels = self._load(image)
            if labels is None or object_id not in labels.deleted:
                raise NotFound(f"image {image!r} has no deleted object {object_id}")
            obj = replace(labels.deleted[object_id],
                          version=labels.deleted[object_id].version + 1)
            self._write_png(image, obj)
            updated = replace(labels, objects={**labels.objects, object_id: obj},
                              deleted={i: o for i, o in labels.deleted.items()
                                       if i != object_id})
            self._write(image, updated)
            self._images[image] = updated
        return obj

    def damaged(self, image: str) -> str | None:
        """Why `image`'s record cannot be read, or None when it can (or does not exist)."""
        try:
            with self._lock:
                self._load(image)
        except DamagedData as err:
            return str(err)
        return None

    def coco(self, images: list[str]) -> dict:
        """One COCO dataset of the labelled `images` (ids renumbered from 1, clicks kept)."""
        dataset = {"info": self._info(), "images": [], "annotations": [],
                   "categories": self.categories()}
        for image in images:
            try:
                with self._lock:
                    labels = self._load(image)
            except DamagedData as err:  # listed, and the rest of the folder still exported
                dataset.setdefault("damaged", {})[image] = str(err)
                continue
            if labels is None or not labels.objects:
                continue
            image_id = len(dataset["images"]) + 1
            dataset["images"].append({"id": image_id, "file_name": image,
                                      "width": labels.width, "height": labels.height})
            for obj in sorted(labels.objects.values(), key=lambda o: o.id):
                entry = obj.to_coco()
                entry.update(id=len(dataset["annotations"]) + 1, image_id=image_id,
                             object_id=obj.id)
                dataset["annotations"].append(entry)
        return dataset

    @staticmethod
    def _info() -> dict:
        return {"description": "labels made with focsam-onnx serve",
                "format_version": FORMAT_VERSION}

    def _write(self, image: str, labels: _ImageLabels) -> None:
        data = {"info": {**self._info(), "next_object_id": labels.next_id},
                "images": [{"id": 1, "file_name": image, "width": labels.width,
                            "height": labels.height}],
                "annotations": [o.to_coco() for o in sorted(labels.objects.values(),
                                                             key=lambda o: o.id)],
                "deleted_annotations": [o.to_coco() for o in sorted(labels.deleted.values(),
                                                                     key=lambda o: o.id)],
                "categories": self.categories()}
        atomic_write(self.folder(image) / ANNOTATIONS, json.dumps(data, indent=1))

    def _load(self, image: str) -> _ImageLabels | None:
        """The labels of `image`, read from disk once (removing PNGs no record names); None when
        there are none yet."""
        if image in self._images:
            return self._images[image]
        path = self.folder(image) / ANNOTATIONS
        if not path.is_file():
            self._remove_unowned(image, set())
            return None
        try:
            data = json.loads(path.read_text())
            (entry,) = data["images"]
            objects = {o.id: o for o in map(SavedObject.from_coco, data["annotations"])}
            deleted = {o.id: o for o in map(SavedObject.from_coco,
                                            data.get("deleted_annotations", []))}
            next_id = max([int(data["info"].get("next_object_id", 1)),
                           *(i + 1 for i in [*objects, *deleted])])
            labels = _ImageLabels(int(entry["width"]), int(entry["height"]), next_id, objects,
                                  deleted)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise DamagedData(f"{path} is unreadable ({type(err).__name__}: {err}); fix or move "
                              "it away, the server will not overwrite it") from None
        self._remove_unowned(image, {o.mask_file for o in objects.values()})
        self._images[image] = labels
        return labels

    def _remove_unowned(self, image: str, owned: set[str]) -> None:
        """Remove the mask PNGs no record names: what a crash between a save's writes leaves."""
        for leftover in self.folder(image).glob("object_*.png"):
            if leftover.name not in owned:
                leftover.unlink(missing_ok=True)
