"""The checkpoint shipped inside the package (the demo model), checked against the catalogue.

It lies beside this module, so an installed wheel and a checkout find it the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from focsam_onnx.errors import DamagedData, Unavailable
from focsam_onnx.weights.catalog import Checkpoint

FOLDER = Path(__file__).resolve().parent


def packaged_path(entry: Checkpoint, folder: Path = FOLDER) -> Path:
    """Where the packaged `entry`'s file lives (it may be absent from this build)."""
    return folder / entry.filename


def packaged_checkpoint(entry: Checkpoint, folder: Path = FOLDER) -> Path:
    """The packaged `entry`'s file, once its size and sha256 are the catalogue's.

    Unavailable when this build does not hold the file; DamagedData when it differs.
    """
    path = packaged_path(entry, folder)
    if not path.is_file():
        raise Unavailable(f"the demo model {entry.name} is not in this build ({path} is absent; "
                          "python -m focsam_onnx.training.release writes it): give --model DIR "
                          "or --weights NAME (focsam-onnx weights list)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if entry.sha256 is None or (digest, len(data)) != (entry.sha256, entry.size):
        raise DamagedData(f"{path} has {len(data):_} bytes and sha256 {digest}; "
                          f"weights/catalog.py records size {entry.size} and sha256 "
                          f"{entry.sha256}: reinstall focsam-onnx, or record a newly released "
                          "file there")
    return path
