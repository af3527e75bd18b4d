"""Test-dataset readers (spec §7): upstream's sample lists, in upstream order, loaded lazily.

Each reader takes the dataset root (the folder that directly holds the dataset's files, see
`DATASETS`) and returns a list of `Sample`. A sample is one object: its ground truth is
`decoded annotation == object_id` as (H, W) uint8 0/1, so void bands (255), other instances and
any other value are background. Images decode with OpenCV in BGR order, as upstream feeds them.

Upstream cannot handle an empty object (it retries the sample 1000 times, then raises);
`iter_samples` can skip such samples and report their ids instead. `find_images` and
`dataset_images` are the walk `embed` encodes: image files under folders, or a dataset's images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from focsam_onnx.engine.image_io import load_image
from focsam_onnx.errors import InvalidInput, require

logger = logging.getLogger(__name__)

# How each dataset stores its annotation (spec §7, "GT decoding").
GT_PIL = "pil"  # np.array(PIL image) as stored: palette index / grey value (GrabCut, Berkeley)
GT_UNCHANGED = "unchanged"  # Pillow "unchanged", squeezed, cast to uint8 (DAVIS)
GT_MVTEC = "mvtec"  # as GT_UNCHANGED, then 255 -> 1
GT_COD10K = "cod10k"  # PIL convert("L"), then 255 -> 1
GT_SBD = "sbd"  # MATLAB file, GTinst struct, first field (Segmentation): instance map
GT_FOLDER = "folder"  # generic: foreground = mask > 0 on any colour channel, alpha ignored
GT_PANOPTIC = "panoptic"  # COCO panoptic PNG: segment id = R + 256*G + 65536*B per pixel

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    """One object of one image.

    id: unique within the dataset (image stem; SBD `<stem>#<instance:03d>`; MVTec
    `<class>_<defect>_<n>`; HQSeg-44K `<subset>/<stem>`; COCO `<image id>#<segment id>`).
    gt_format: one of the GT_* decoders of this module. subset: the part of a benchmark the
    sample belongs to, reported on its own by `evaluate` ("" for single-part datasets).
    """

    id: str
    image_path: Path
    gt_path: Path
    object_id: int = 1
    gt_format: str = GT_PIL
    subset: str = ""

    def __post_init__(self) -> None:
        if self.gt_format not in _DECODERS:
            raise InvalidInput(f"unknown gt_format {self.gt_format!r}; "
                               f"known: {', '.join(_DECODERS)}")

    def load_image(self) -> np.ndarray:
        """(H, W, 3) uint8, BGR (alpha dropped, grey expanded), as `cv2.IMREAD_COLOR` gives."""
        return load_image(self.image_path)

    def load_gt(self) -> np.ndarray:
        """(H, W) uint8: 1 where the decoded annotation equals object_id, else 0 (may be empty)."""
        decoded = _DECODERS[self.gt_format](self.gt_path)
        if decoded.ndim != 2:
            raise InvalidInput(f"annotation {self.gt_path} decodes to shape {decoded.shape}, "
                               "expected a single-channel (H, W) map")
        return (decoded == self.object_id).astype(np.uint8)

    def load(self) -> tuple[str, np.ndarray, np.ndarray]:
        """(id, image (H, W, 3) uint8 BGR, gt (H, W) uint8 0/1)."""
        gt = self.load_gt()
        return self.id, _image_matching(self, gt), gt


def _image_matching(sample: Sample, gt: np.ndarray) -> np.ndarray:
    image = sample.load_image()
    if image.shape[:2] != gt.shape:
        raise InvalidInput(f"image {sample.image_path} is {image.shape[:2]} but its annotation "
                           f"{sample.gt_path} is {gt.shape}")
    return image


def iter_samples(
    samples: Iterable[Sample], skipped: list[str] | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield `(id, image_bgr, gt)` one sample at a time, in list order.

    With `skipped=None` every sample is yielded, empty objects included (check `gt.any()`).
    With a list, samples whose object is empty are not yielded and their ids are appended to it,
    so the caller can report them (upstream would fail on them instead).
    """
    for sample in samples:
        gt = sample.load_gt()
        if skipped is not None and not gt.any():
            skipped.append(sample.id)
            continue
        yield sample.id, _image_matching(sample, gt), gt


# --- annotation decoders: path -> (H, W) integer map ---------------------------------------


def _decode_pil(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def _decode_unchanged(path: Path) -> np.ndarray:
    return _decode_pil(path).squeeze().astype(np.uint8)


def _decode_mvtec(path: Path) -> np.ndarray:
    decoded = _decode_unchanged(path)
    decoded[decoded == 255] = 1
    return decoded


def _decode_cod10k(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        decoded = np.array(image.convert("L"))
    decoded[decoded == 255] = 1
    return decoded


def _decode_sbd(path: Path) -> np.ndarray:
    # Upstream takes the struct's first field, which is `Segmentation` in the SBD release.
    loadmat = require("scipy.io", "reading SBD's MATLAB annotations", "evaluate").loadmat
    return np.asarray(loadmat(str(path))["GTinst"][0][0][0])


def _decode_folder(path: Path) -> np.ndarray:
    decoded = _decode_pil(path)
    if decoded.ndim == 3:
        colour = decoded[..., :3] if decoded.shape[2] >= 3 else decoded[..., :1]
        decoded = colour.any(axis=2)
    return (decoded > 0).astype(np.uint8)


def _decode_panoptic(path: Path) -> np.ndarray:
    # Upstream reads the PNG in BGR order and weighs it B*65536 + G*256 + R: the same COCO id.
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint32)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


_DECODERS: dict[str, Callable[[Path], np.ndarray]] = {
    GT_PIL: _decode_pil,
    GT_UNCHANGED: _decode_unchanged,
    GT_MVTEC: _decode_mvtec,
    GT_COD10K: _decode_cod10k,
    GT_SBD: _decode_sbd,
    GT_FOLDER: _decode_folder,
    GT_PANOPTIC: _decode_panoptic,
}


# --- readers: root -> list[Sample] ---------------------------------------------------------


def _keyed(paths: Iterable[Path], key: Callable[[Path], str]) -> dict[str, Path]:
    """{key(path): path}, refusing two files with one key (upstream would keep either)."""
    found: dict[str, Path] = {}
    for path in paths:
        k = key(path)
        if k in found:
            raise InvalidInput(f"two files share the key {k!r}: {found[k]} and {path}")
        found[k] = path
    return found


def _require(found: list[Sample], dataset: str, root: Path, expected: str) -> list[Sample]:
    if not found:
        raise InvalidInput(f"no {dataset} samples under {root}: expected {expected}")
    return found


def _read_focuscut(root: Path, dataset: str, image_suffix: str, gt_format: str) -> list[Sample]:
    """FocusCut copies (img/, gt/): image `<name><suffix>` pairs with mask `<name>#001.png`."""
    images = _keyed(
        (p for p in root.rglob(f"*{image_suffix}") if not p.stem.endswith("#001")),
        lambda p: f"{p.stem}#001",
    )
    masks = _keyed((p for p in root.rglob("*.png") if p.stem.endswith("#001")), lambda p: p.stem)
    samples = [
        Sample(key.removesuffix("#001"), images[key], masks[key], 1, gt_format)
        for key in sorted(images.keys() & masks.keys())
    ]
    expected = (f"images <name>{image_suffix} paired with masks <name>#001.png anywhere below "
                f"it (FocusCut layout: img/<name>{image_suffix}, gt/<name>#001.png)")
    return _require(samples, dataset, root, expected)


def read_grabcut(root: Path) -> list[Sample]:
    """GrabCut: every PNG whose stem does not end with `#001` is an image."""
    return _read_focuscut(Path(root), "GrabCut", ".png", GT_PIL)


def read_berkeley(root: Path) -> list[Sample]:
    return _read_focuscut(Path(root), "Berkeley", ".jpg", GT_PIL)


def read_davis(root: Path) -> list[Sample]:
    return _read_focuscut(Path(root), "DAVIS", ".jpg", GT_UNCHANGED)


def read_sbd(root: Path) -> list[Sample]:
    """SBD val: one sample per distinct non-zero instance value, by stem then value."""
    root = Path(root)
    val_list = root / "val.txt"
    if not val_list.is_file():
        raise InvalidInput(f"{val_list} not found: the SBD root is the `dataset` folder of "
                           "benchmark_RELEASE, holding img/, inst/ and val.txt")
    val_stems = {line.strip() for line in val_list.read_text().splitlines()}
    images = _keyed((p for p in root.rglob("*.jpg") if p.stem in val_stems), lambda p: p.stem)
    # Upstream globs `*inst/*.mat`: annotation folders whose name ends with "inst".
    annotations = _keyed(
        (p for p in root.rglob("*.mat") if p.parent.name.endswith("inst") and p.stem in val_stems),
        lambda p: p.stem,
    )
    samples = []
    for stem in sorted(images.keys() & annotations.keys()):
        for value in np.unique(_decode_sbd(annotations[stem])):
            if value != 0:
                samples.append(Sample(f"{stem}#{int(value):03d}", images[stem],
                                      annotations[stem], int(value), GT_SBD))
    return _require(samples, "SBD", root, "img/<stem>.jpg and inst/<stem>.mat for stems in val.txt")


def read_cod10k(root: Path) -> list[Sample]:
    """COD10K-v3 test, camouflaged subset (stems listed in Info/CAM_test.txt)."""
    root = Path(root)
    image_dir, mask_dir = root / "Test" / "Image", root / "Test" / "GT_Object"
    cam_list = root / "Info" / "CAM_test.txt"
    for needed in (image_dir, mask_dir, cam_list):
        if not needed.exists():
            raise InvalidInput(f"{needed} not found: the COD10K root is the COD10K-v3 folder "
                               "holding Test/Image, Test/GT_Object and Info/CAM_test.txt")
    cam_stems = {Path(line.split()[0]).stem
                 for line in cam_list.read_text().splitlines() if line.strip()}
    images = _keyed(image_dir.glob("*.jpg"), lambda p: p.stem)
    masks = _keyed(mask_dir.glob("*.png"), lambda p: p.stem)
    samples = [Sample(stem, images[stem], masks[stem], 1, GT_COD10K)
               for stem in sorted(images.keys() & masks.keys() & cam_stems)]
    return _require(samples, "COD10K", root, "Test/Image/<stem>.jpg and Test/GT_Object/<stem>.png "
                    "for stems listed in Info/CAM_test.txt")


# Upstream drops these (class, defect) pairs, matched as case-insensitive substrings of the key.
MVTEC_EXCLUDED = (("transistor", "cut_lead"), ("transistor", "misplaced"))


def _mvtec_excluded(key: str) -> bool:
    lowered = key.lower()
    return any(cls in lowered and defect in lowered for cls, defect in MVTEC_EXCLUDED)


def read_mvtec(root: Path) -> list[Sample]:
    """MVTec AD defect images (`<class>/test/<defect>/<n>.png`, defect != good) with their masks."""
    root = Path(root).absolute()  # keys need three parent folders of every file
    images = _keyed(
        (p for p in root.rglob("*.png")
         if p.parents[1].name == "test" and p.parent.name != "good"),
        lambda p: f"{p.parents[2].name}_{p.parent.name}_{p.name.replace('.png', '')}",
    )
    masks = _keyed(
        (p for p in root.rglob("*_mask.png") if p.parents[1].name == "ground_truth"),
        lambda p: f"{p.parents[2].name}_{p.parent.name}_{p.name.replace('_mask.png', '')}",
    )
    samples = [Sample(key, images[key], masks[key], 1, GT_MVTEC)
               for key in sorted(images.keys() & masks.keys()) if not _mvtec_excluded(key)]
    return _require(samples, "MVTec", root, "<class>/test/<defect>/<n>.png with "
                    "<class>/ground_truth/<defect>/<n>_mask.png")


def read_folder(root: Path) -> list[Sample]:
    """Generic: `images/` and `masks/` below root, paired by stem, one object per mask.

    Foreground = mask value > 0 on any colour channel (alpha ignored; palette PNGs: index > 0).
    Images without a mask (and masks without an image) are left out and logged.
    """
    root = Path(root)
    image_dir, mask_dir = root / "images", root / "masks"
    if not (image_dir.is_dir() and mask_dir.is_dir()):
        raise InvalidInput(f"{root} must hold images/ and masks/ folders (files paired by stem)")

    def listed(folder: Path) -> dict[str, Path]:
        files = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        return _keyed(files, lambda p: p.stem)

    images, masks = listed(image_dir), listed(mask_dir)
    unpaired = len(images.keys() ^ masks.keys())
    if unpaired:
        logger.warning("%d files in %s have no partner of the same stem", unpaired, root)
    samples = [Sample(stem, images[stem], masks[stem], 1, GT_FOLDER)
               for stem in sorted(images.keys() & masks.keys())]
    return _require(samples, "folder", root, "images/<stem>.<ext> with masks/<stem>.<ext>")


# HQSeg-44K val as SAM-HQ lays it out: (subset, image folder, mask folder), in evaluation order.
HQSEG44K_VAL = (
    ("DIS5K-VD", "DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
    ("ThinObject5K-TE", "thin_object_detection/ThinObject5K/images_test",
     "thin_object_detection/ThinObject5K/masks_test"),
    ("COIFT", "thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks"),
    ("HRSOD", "thin_object_detection/HRSOD/images", "thin_object_detection/HRSOD/masks_max255"),
)


def read_hqseg44k(root: Path) -> list[Sample]:
    """HQSeg-44K val: the four subsets in `HQSEG44K_VAL` order, each sorted by image file name.

    Image `<stem>.jpg` pairs with mask `<stem>.png`; one object per image, foreground = mask
    > 0 on any colour channel. Upstream FocSAM has no HQSeg loader; this is SAM-HQ's val split.
    """
    root = Path(root)
    samples = []
    for subset, image_dir, mask_dir in HQSEG44K_VAL:
        for folder in (image_dir, mask_dir):
            if not (root / folder).is_dir():
                raise InvalidInput(f"{root / folder} not found: the HQSeg-44K root is SAM-HQ's "
                                   f"data folder, holding {subset} images in {image_dir}/ and "
                                   f"masks in {mask_dir}/")
        masks = _keyed((root / mask_dir).glob("*.png"), lambda p: p.stem)
        images = sorted((root / image_dir).glob("*.jpg"), key=lambda p: p.name)
        unpaired = [p.name for p in images if p.stem not in masks]
        if unpaired:
            raise InvalidInput(f"{len(unpaired)} {subset} images have no mask <stem>.png in "
                               f"{root / mask_dir}, e.g. {unpaired[0]}")
        samples += [Sample(f"{subset}/{p.stem}", p, masks[p.stem], 1, GT_FOLDER, subset)
                    for p in images]
    return _require(samples, "HQSeg-44K", root, "<subset images>/<stem>.jpg with "
                    "<subset masks>/<stem>.png for " + ", ".join(s for s, _, _ in HQSEG44K_VAL))


def _numbered(paths: Iterable[Path]) -> dict[str, Path]:
    """{str(int(stem)): path} for the files whose stem is a number (COCO's image ids)."""
    return _keyed((p for p in paths if p.stem.isdigit()), lambda p: str(int(p.stem)))


_COCO_LAYOUT = ("annotations/panoptic_val2017.json, annotations/panoptic_val2017/<id>.png and "
                "val2017/<id>.jpg (COCO's panoptic_annotations_trainval2017 and val2017 unpacked)")


def read_coco(root: Path) -> list[Sample]:
    """COCO panoptic val: one sample per `segments_info` entry (things and stuff, crowd too).

    Images `*.jpg` and panoptic PNGs `*.png` anywhere below root, keyed by the number in their
    stem; annotations from the one `*panoptic_val2017.json`, in its order, then segment order.
    Annotations whose image or PNG is absent are left out and counted in a warning.
    """
    root = Path(root)
    found = sorted(root.rglob("*panoptic_val2017.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} files"
        raise InvalidInput(f"{what} *panoptic_val2017.json under {root}: the COCO root holds "
                           f"{_COCO_LAYOUT}")
    try:
        annotation = json.loads(found[0].read_text())
        categories = {c["id"]: bool(c.get("isthing", 1)) for c in annotation["categories"]}
        entries = annotation["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InvalidInput(f"{found[0]} is not a COCO panoptic annotation file ({err})") from err
    images, pngs = _numbered(root.rglob("*.jpg")), _numbered(root.rglob("*.png"))
    samples, missing = [], 0
    for entry in entries:
        stem = Path(entry["file_name"]).stem
        key = str(int(stem)) if stem.isdigit() else stem
        if key not in images or key not in pngs:
            missing += 1
            continue
        for segment in entry["segments_info"]:
            subset = "things" if categories.get(segment["category_id"], True) else "stuff"
            samples.append(Sample(f"{stem}#{segment['id']}", images[key], pngs[key],
                                  int(segment["id"]), GT_PANOPTIC, subset))
    if missing:
        logger.warning("%d of %d annotations in %s have no image or PNG under %s; left out",
                       missing, len(entries), found[0].name, root)
    return _require(samples, "COCO panoptic", root, _COCO_LAYOUT)


# Datasets upstream FocSAM has no loader for: its protocol applied to our sample list.
NOT_IN_UPSTREAM = {
    "hqseg44k": "HQSeg-44K val as SAM-HQ releases it (upstream FocSAM has no HQSeg loader)",
    "folder": "a generic images/ + masks/ folder",
}

# Each reader's root: grabcut/berkeley/davis the folder holding img/ and gt/; sbd the
# benchmark_RELEASE/dataset folder; cod10k the COD10K-v3 folder; mvtec the folder of class
# folders; folder the one holding images/ and masks/; hqseg44k SAM-HQ's data folder (holding
# DIS5K/ and thin_object_detection/); coco the folder holding annotations/ and val2017/.
DATASETS: dict[str, Callable[[Path], list[Sample]]] = {
    "grabcut": read_grabcut,
    "berkeley": read_berkeley,
    "davis": read_davis,
    "sbd": read_sbd,
    "cod10k": read_cod10k,
    "mvtec": read_mvtec,
    "folder": read_folder,
    "hqseg44k": read_hqseg44k,
    "coco": read_coco,
}


def open_dataset(name: str, root: str | Path) -> list[Sample]:
    """The sample list of dataset `name` (a key of DATASETS) stored at `root`, upstream order."""
    if name not in DATASETS:
        raise InvalidInput(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"dataset root {root} is not a directory")
    return DATASETS[name](root)


# The image walk `embed` uses: which files a list of paths or a dataset names.


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for image files (sorted); order kept,
    duplicates dropped. Raises ValueError for a path that does not exist."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            found.update(dict.fromkeys(files))
        elif path.exists():
            found[path] = None
        else:
            raise InvalidInput(f"no such file or folder: {path}")
    return list(found)


def dataset_images(samples: Iterable[Sample]) -> list[Path]:
    """The distinct image files of `samples`, in sample order (SBD has several objects each)."""
    return list(dict.fromkeys(s.image_path for s in samples))
