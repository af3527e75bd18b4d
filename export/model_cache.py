"""Exports made on demand from a checkpoint, once, into a cache folder that later runs reuse.

`serve --weights` and `segment --weights` fetch a checkpoint into `<cache>/checkpoints/` and
export it into `<cache>/models/<file stem>-<sha256[:12]>`: named after the checkpoint's hash, so
another checkpoint never reuses an export made for this one. `export_model` builds the folder
beside its final place and renames it in only once every graph passed parity, so an interrupted
first run leaves nothing half-made.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from focsam_onnx.engine.loaded_model import read_manifest

CACHE_ENV = "FOCSAM_ONNX_CACHE"


def cache_root() -> Path:
    """`$FOCSAM_ONNX_CACHE`, else `$XDG_CACHE_HOME/focsam-onnx`, else `~/.cache/focsam-onnx`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "focsam-onnx"


def checkpoint_path(filename: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / "checkpoints" / filename


def export_dir(filename: str, sha256: str, root: Path | None = None) -> Path:
    """Where the export of checkpoint `filename` with this sha256 lives (may not exist yet)."""
    return (root or cache_root()) / "models" / f"{Path(filename).stem}-{sha256[:12]}"


def is_exported(out: Path) -> bool:
    """Whether `out` holds a finished export (a damaged manifest raises DamagedData)."""
    if not (out / "manifest.json").is_file():
        return False
    read_manifest(out)
    return True


def export_once(checkpoint: Path, out: Path,
                on_graph: Callable[[str], None] | None = None) -> bool:
    """Export `checkpoint` into `out` unless it is there already; whether it exported now."""
    if is_exported(out):
        return False
    from focsam_onnx.export.exporter import export_model
    from focsam_onnx.export.model_source import from_checkpoint

    model, source = from_checkpoint(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_model(model, out, source, on_graph=on_graph)
    return True
