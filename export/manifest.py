"""manifest.json: what an exported model directory holds, and how to trust it."""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime
import torch

from focsam_onnx import __version__
from focsam_onnx.engine.graph_spec import GRAPHS
from focsam_onnx.engine.model_dir import FORMAT_VERSION, MANIFEST, file_sha256
from focsam_onnx.models.config import FocSAMConfig


@dataclass
class GraphReport:
    """What exporting one graph produced."""

    name: str
    files: list[str]
    bytes: int
    parity: float  # max abs difference, ORT vs torch, over all parity cases and outputs
    seconds: float
    simplified: bool
    notes: list[str] = field(default_factory=list)


def write_manifest(out_dir: Path, config: FocSAMConfig, reports: list[GraphReport],
                   opset: int, source: dict) -> dict:
    """Hash every graph file and write `out_dir/manifest.json`; returns the manifest."""
    files = {}
    for report in reports:
        for name in report.files:
            path = out_dir / name
            files[name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    model_id = hashlib.sha256(
        "".join(f"{n}:{m['sha256']}" for n, m in sorted(files.items())).encode()).hexdigest()
    exported = {r.name for r in reports}
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "variant": config.variant,
        "kind": "sam" if config.is_plain_sam else "focsam",
        "config": config.to_dict(),
        "source": source,
        "opset": opset,
        "versions": {"focsam_onnx": __version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "graphs": {g.name: g.to_dict() for g in GRAPHS if g.name in exported},
        "parity": {r.name: {"max_abs_diff": r.parity, "simplified": r.simplified,
                            "notes": r.notes} for r in reports},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
