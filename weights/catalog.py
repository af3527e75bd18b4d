"""The checkpoints `focsam-onnx export` reads, where each is published, its size and sha256.

Sizes and checksums are those of the published files (segment-anything's release; the same
values are pinned independently by many projects that download them). An entry without a URL
is distributed where no plain HTTP download exists; its `by_hand` says how to get it. The one
`packaged` entry, `demo_tiny`, is this project's own demo model: it ships inside the package
(`weights/demo_tiny.pth`, checked against the size and sha256 recorded here on every use) and is
never downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from focsam_onnx.errors import NotFound

SAM_RELEASE = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class Checkpoint:
    name: str
    description: str
    filename: str
    url: str | None = None  # None: fetched by hand, see `by_hand`
    size: int | None = None  # bytes
    sha256: str | None = None
    by_hand: str | None = None
    packaged: bool = False  # ships inside this package as weights/<filename>: never downloaded


# The packaged demo model (README: Demo model). `python -m focsam_onnx.training.release` writes
# weights/demo_tiny.pth and prints these two values: record them here when committing the file
# (tests/weights/test_catalog.py fails while the file and these disagree).
DEMO = "demo_tiny"
DEMO_TINY_SIZE = 19_186_507
DEMO_TINY_SHA256 = "3acaf5cf11241973287bdfbaaef95882c21616d948d1d8f7806b105ceb7bf559"

CATALOG: tuple[Checkpoint, ...] = (
    Checkpoint("sam_vit_b", "SAM ViT-B (plain SAM: no refiner)", "sam_vit_b_01ec64.pth",
               SAM_RELEASE + "sam_vit_b_01ec64.pth", 375_042_383,
               "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    Checkpoint("sam_vit_l", "SAM ViT-L (plain SAM: no refiner)", "sam_vit_l_0b3195.pth",
               SAM_RELEASE + "sam_vit_l_0b3195.pth", 1_249_524_607,
               "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    Checkpoint("sam_vit_h", "SAM ViT-H (plain SAM: no refiner)", "sam_vit_h_4b8939.pth",
               SAM_RELEASE + "sam_vit_h_4b8939.pth", 2_564_550_879,
               "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    # Upstream (github.com/YouHuang67/focsam) publishes its checkpoint on Google Drive only, as a
    # zip, and states no size or checksum.
    Checkpoint("focsam_vit_h", "FocSAM ViT-H (SAM ViT-H + the focus refiner)",
               "iter_160000.pth",
               by_hand="download the zip from https://drive.google.com/file/d/"
                       "1VOeMkY9LovfWYi66JMR8q79gFiC4n3Az/view in a browser, unzip it into "
                       "work_dirs/focsam/focsam_vit_huge_eval/ and export its iter_160000.pth"),
    Checkpoint(DEMO, "this project's demo model: tiny FocSAM trained on generated shapes "
               "(not FocSAM's quality; for first runs, tests and offline demos)",
               "demo_tiny.pth", size=DEMO_TINY_SIZE, sha256=DEMO_TINY_SHA256, packaged=True),
)


def find(name: str) -> Checkpoint:
    """The catalogue entry called `name`; ValueError listing the known names otherwise."""
    for entry in CATALOG:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in CATALOG)
    raise NotFound(f"unknown checkpoint {name!r}; known: {known} (or give --url and --sha256)")
