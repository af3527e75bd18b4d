"""Every export read back by a reader of its own gives the saved masks: pycocotools for COCO,
this file's rasteriser for the polygon formats, Pillow for VOC's PNGs."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pycocotools")
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from focsam_onnx.engine.prompts import Click  # noqa: E402
from focsam_onnx.errors import Conflict  # noqa: E402
from focsam_onnx.labels.convert import convert, convert_to_zip  # noqa: E402
from focsam_onnx.labels.outline import outline  # noqa: E402
from focsam_onnx.labels.voc import voc_palette  # noqa: E402
from focsam_onnx.serve.annotations import AnnotationStore  # noqa: E402

H, W = 240, 320
CLASSES = ("cat", "dog: \"big\"")  # a name YAML would misread unquoted


def shape(draw) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    draw(mask)
    return mask.astype(bool)


COMPACT = {
    "disc": shape(lambda m: cv2.circle(m, (80, 70), 40, 1, -1)),
    "ellipse": shape(lambda m: cv2.ellipse(m, (200, 150), (90, 35), 25, 0, 360, 1, -1)),
    "small disc": shape(lambda m: cv2.circle(m, (290, 30), 12, 1, -1)),
    "two parts": shape(lambda m: (cv2.rectangle(m, (20, 150), (70, 220), 1, -1),
                                  cv2.circle(m, (120, 200), 25, 1, -1))),
}
RING = shape(lambda m: (cv2.circle(m, (230, 70), 45, 1, -1), cv2.circle(m, (230, 70), 20, 0, -1)))
THIN = {
    "line 3 px": shape(lambda m: cv2.line(m, (10, 10), (310, 230), 1, 3)),
    "line 1 px": shape(lambda m: cv2.line(m, (10, 230), (310, 100), 1, 1)),
}


def rasterise(rings: list[np.ndarray]) -> np.ndarray:
    """Pixels whose centre (x + 0.5, y + 0.5) is inside the rings, even-odd: the tests' own
    polygon reader, independent of OpenCV's."""
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    inside = np.zeros((H, W), bool)
    for ring in rings:
        x1, y1 = ring[:, 0], ring[:, 1]
        for a, b, c, d in zip(x1, y1, np.roll(x1, -1), np.roll(y1, -1)):
            if b == d:
                continue
            inside ^= ((b > ys) != (d > ys)) & (xs < a + (ys - b) * (c - a) / (d - b))
    return inside


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def filled(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled (what YOLO and LabelMe polygons can hold)."""
    return rasterise([p.outer for p in outline(mask, 0)])


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> tuple[Path, dict[str, dict[int, np.ndarray]]]:
    """A labels folder written by the server's own store: two images, classes cat and dog."""
    root = tmp_path_factory.mktemp("labels")
    store = AnnotationStore(root, CLASSES)
    saved: dict[str, dict[int, np.ndarray]] = {}
    images = {"a.jpg": {**COMPACT, "ring": RING}, "b.png": THIN}
    for image, masks in images.items():
        saved[image] = {}
        for index, mask in enumerate(masks.values()):
            object_id = store.new_object_id(image, H, W)
            store.save(image, object_id, mask, (Click(0, 0),), 0.9, None, "test",
                       category_id=1 + index % 2)
            saved[image][object_id] = mask
    return root, saved


def kind(image: str, object_id: int) -> str:
    names = [*COMPACT, "ring"] if image == "a.jpg" else list(THIN)
    return names[object_id - 1]


def test_coco_read_back_by_pycocotools(labels, tmp_path):
    root, saved = labels
    convert(root, "coco", tmp_path / "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    for image in coco.loadImgs(coco.getImgIds()):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            mask = saved[image["file_name"]][ann["object_id"]]
            name = kind(image["file_name"], ann["object_id"])
            back = coco.annToMask(ann).astype(bool)
            assert ann["category_id"] == 1 + (ann["object_id"] - 1) % 2
            if name == "ring":  # a hole: COCO polygons cannot hold it, the RLE is kept
                assert isinstance(ann["segmentation"], dict)
                assert np.array_equal(back, mask)
            else:
                assert isinstance(ann["segmentation"], list)
                assert iou(back, mask) >= 0.98, name


def read_yolo(folder: Path, stem: str) -> list[tuple[int, np.ndarray]]:
    rows = []
    for line in (folder / "labels" / f"{stem}.txt").read_text().splitlines():
        values = line.split()
        ring = np.array(values[1:], float).reshape(-1, 2) * [W, H]
        rows.append((int(values[0]), ring))
    return rows


def test_yolo_read_back(labels, tmp_path):
    root, saved = labels
    convert(root, "yolo", tmp_path / "yolo")
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES))
    for image, masks in saved.items():
        rows = read_yolo(tmp_path / "yolo", Path(image).stem)
        assert len(rows) == len(masks)  # one line per object, its parts bridged
        for (cls, ring), (object_id, mask) in zip(rows, masks.items()):
            name = kind(image, object_id)
            assert cls == (object_id - 1) % 2
            back = rasterise([ring])
            if name == "ring":  # no holes in YOLO: the filled disc
                assert iou(back, filled(mask)) >= 0.98
            else:
                assert iou(back, mask) >= 0.98, name


def test_labelme_read_back(labels, tmp_path):
    root, saved = labels
    convert(root, "labelme", tmp_path / "labelme")
    for image, masks in saved.items():
        data = json.loads((tmp_path / "labelme" / f"{Path(image).stem}.json").read_text())
        assert (data["imagePath"], data["imageWidth"], data["imageHeight"]) == (image, W, H)
        for object_id, mask in masks.items():
            shapes = [s for s in data["shapes"] if s["group_id"] == object_id]
            assert {s["label"] for s in shapes} == {CLASSES[(object_id - 1) % 2]}
            back = np.zeros((H, W), bool)
            for s in shapes:
                back |= rasterise([np.array(s["points"])])
            name = kind(image, object_id)
            expected = filled(mask) if name == "ring" else mask
            assert len(shapes) == (2 if name == "two parts" else 1)
            assert iou(back, expected) >= 0.98, name


def test_voc_read_back(labels, tmp_path):
    root, saved = labels
    convert(root, "voc", tmp_path / "voc")
    assert (tmp_path / "voc" / "class_names.txt").read_text().split("\n")[:3] == [
        "background", *CLASSES]
    for image, masks in saved.items():
        stem = Path(image).stem
        classes = Image.open(tmp_path / "voc" / "SegmentationClass" / f"{stem}.png")
        objects = Image.open(tmp_path / "voc" / "SegmentationObject" / f"{stem}.png")
        assert classes.mode == objects.mode == "P"
        assert classes.getpalette()[:9] == voc_palette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        class_map, object_map = np.asarray(classes), np.asarray(objects)
        later = np.zeros((H, W), bool)
        for index, (object_id, mask) in reversed(list(enumerate(masks.items(), start=1))):
            shown = mask & ~later  # a later object covers an earlier one where they overlap
            assert np.array_equal(object_map == index, shown)
            assert np.all(class_map[shown] == 1 + (object_id - 1) % 2)
            later |= mask
        assert not class_map[~later].any()


def test_zip_holds_the_same_files_and_images_are_copied(labels, tmp_path):
    root, _ = labels
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpeg bytes")
    convert(root, "yolo", tmp_path / "yolo", images=photos)
    assert (tmp_path / "yolo" / "images" / "a.jpg").read_bytes() == b"jpeg bytes"
    archive = zipfile.ZipFile(io.BytesIO(convert_to_zip(root, "yolo")))
    assert sorted(archive.namelist()) == ["data.yaml", "labels/a.txt", "labels/b.txt"]
    assert archive.read("labels/a.txt") == (tmp_path / "yolo" / "labels" / "a.txt").read_bytes()


def test_a_non_empty_destination_is_refused(labels, tmp_path):
    root, _ = labels
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(Conflict, match="not empty"):
        convert(root, "coco", tmp_path)


def test_cli_and_page_download_write_the_same_dataset(labels, tiny_model_dir, tmp_path):
    """`labels convert` and GET /api/export/{fmt} of a server on the same folder agree file for
    file, for every format."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from focsam_onnx.cli import app as cli
    from focsam_onnx.serve.app import create_app
    from focsam_onnx.serve.labeller import LabellerSettings

    root, _ = labels
    settings = LabellerSettings(model=tiny_model_dir, images=tmp_path / "images", out=root,
                                threads=1, prefetch=0)
    (tmp_path / "images").mkdir()
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        for fmt in ("coco", "yolo", "labelme", "voc"):
            result = CliRunner().invoke(cli, ["labels", "convert", str(root), "--format", fmt,
                                              "--out", str(tmp_path / fmt)])
            assert result.exit_code == 0, result.output
            assert "2 images, 7 objects, 2 classes" in result.output
            response = client.get(f"/api/export/{fmt}")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/zip"
            archive = zipfile.ZipFile(io.BytesIO(response.content))
            written = {p.relative_to(tmp_path / fmt).as_posix(): p.read_bytes()
                       for p in (tmp_path / fmt).rglob("*") if p.is_file()}
            assert {n: archive.read(n) for n in archive.namelist()} == written
        assert client.get("/api/export/pdf").status_code == 422
    refused = CliRunner().invoke(cli, ["labels", "convert", str(root), "--format", "pdf",
                                       "--out", str(tmp_path / "pdf")])
    assert refused.exit_code != 0 and "coco, yolo, labelme, voc" in refused.output


def test_the_readme_export_command_runs(labels, tmp_path):
    """The README's `labels convert` command, as written, on a labels folder named `labels`."""
    import re
    import shlex
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    text = (repo / "README.md").read_text().split("### Export a dataset\n", 1)[1]
    (line,) = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    argv = shlex.split(line)
    assert argv[:3] == [".venv/bin/focsam-onnx", "labels", "convert"]
    shutil.copytree(labels[0], tmp_path / "labels")
    shutil.copytree(repo / "examples", tmp_path / "examples")
    done = subprocess.run([sys.executable, "-m", "focsam_onnx.cli", *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / argv[argv.index("--out") + 1]
    assert (out / "data.yaml").is_file() and (out / "labels" / "a.txt").is_file()
