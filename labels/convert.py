"""`labels convert`: a labels folder into one of the dataset formats, as a folder or a zip."""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from focsam_onnx.errors import Conflict
from focsam_onnx.labels.coco import write_coco
from focsam_onnx.labels.labelme import write_labelme
from focsam_onnx.labels.records import LabelSet, read_labels
from focsam_onnx.labels.voc import write_voc
from focsam_onnx.labels.yolo import write_yolo

Format = Literal["coco", "yolo", "labelme", "voc"]
WRITERS: dict[str, Callable[[LabelSet, Path], list[Path]]] = {
    "coco": write_coco, "yolo": write_yolo, "labelme": write_labelme, "voc": write_voc}
IMAGE_FOLDER = {"coco": "images", "yolo": "images", "labelme": ".", "voc": "JPEGImages"}


def convert(labels_dir: Path, fmt: Format, dest: Path, images: Path | None = None) -> LabelSet:
    """Write the labels of `labels_dir` to the empty or new folder `dest` in `fmt`; with
    `images`, the labelled images are copied in where the format expects them."""
    labels = read_labels(labels_dir)
    if fmt != "coco":  # the other formats name each image's files after its stem
        clashes = [s for s, n in Counter(Path(i.file_name).stem for i in labels.images).items()
                   if n > 1]
        if clashes:
            raise Conflict(f"images {', '.join(sorted(clashes))} differ only by extension; "
                           f"{fmt} names files by stem: rename one")
    if dest.exists() and any(dest.iterdir()):
        raise Conflict(f"{dest} is not empty; give a new or empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    WRITERS[fmt](labels, dest)
    if images is not None:
        folder = dest / IMAGE_FOLDER[fmt]
        folder.mkdir(parents=True, exist_ok=True)
        for image in labels.images:
            source = images / image.file_name
            if source.is_file():
                shutil.copy2(source, folder / image.file_name)
    return labels


def convert_to_zip(labels_dir: Path, fmt: Format, images: Path | None = None) -> bytes:
    """The same as a zip archive in memory (the page's downloads)."""
    with tempfile.TemporaryDirectory(prefix="focsam-export-") as temp:
        dest = Path(temp) / fmt
        convert(labels_dir, fmt, dest, images)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(dest.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(dest).as_posix())
        return buffer.getvalue()
