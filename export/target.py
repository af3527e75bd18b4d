"""Where an export may be written: checked before any slow work, and without importing torch."""

from __future__ import annotations

from pathlib import Path

from focsam_onnx.engine.atomic_io import check_writable
from focsam_onnx.engine.manifest import MANIFEST
from focsam_onnx.errors import InvalidInput


def check_export_target(out_dir: str | Path, force: bool = False) -> None:
    """Raise ValueError unless `out_dir` may receive an export: absent, an empty folder, or (with
    `force`) a previous export, which is replaced only once the new one passed parity."""
    out_dir = Path(out_dir)
    check_writable(out_dir, "export folder")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InvalidInput(f"export folder {out_dir} is a file; choose a new or empty folder")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / MANIFEST).is_file():
        raise InvalidInput(f"export folder {out_dir} holds files but no {MANIFEST} (not an "
                           "export); choose a new or empty folder")
    if not force:
        raise InvalidInput(f"export folder {out_dir} holds an export; pass --force to replace it "
                           "(it is kept until the new export passed parity) or choose another")
