"""Writing manifest.json: hash every file, read back what each graph file really is."""

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
from focsam_onnx.config import FocSAMConfig
from focsam_onnx.engine.atomic_io import atomic_write
from focsam_onnx.engine.graph_spec import GRAPHS_BY_NAME
from focsam_onnx.engine.integrity import file_sha256, file_stamp
from focsam_onnx.engine.manifest import MANIFEST, FileEntry, GraphParity, Manifest, Source


@dataclass
class GraphReport:
    """What exporting one graph produced."""

    name: str
    files: list[str]
    bytes: int
    parity: dict[str, float]  # output -> max abs ORT-vs-torch difference over all parity cases
    seconds: float
    simplified: bool
    notes: list[str] = field(default_factory=list)

    @property
    def worst_parity(self) -> float:
        return max(self.parity.values(), default=0.0)


def file_entry(path: Path) -> FileEntry:
    """Size, sha256 and stamp; for an .onnx file also the ai.onnx opset and IR version it
    declares and the files it keeps its weights in (opening it reads those too)."""
    opset = ir_version = None
    external: tuple[str, ...] = ()
    if path.suffix == ".onnx":
        model = onnx.load(str(path), load_external_data=False)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        ir_version = model.ir_version
        external = external_data_files(model)
    return FileEntry(path.stat().st_size, file_sha256(path), opset, ir_version,
                     file_stamp(path), external)


def external_data_files(model: onnx.ModelProto) -> tuple[str, ...]:
    """The external data files the graph's initializers are stored in (ViT-H's encoder)."""
    return tuple(sorted({entry.value for tensor in model.graph.initializer
                         if tensor.data_location == onnx.TensorProto.EXTERNAL
                         for entry in tensor.external_data if entry.key == "location"}))


def write_manifest(out_dir: Path, config: FocSAMConfig, reports: list[GraphReport],
                   opset: int, source: Source) -> Manifest:
    """Hash every graph file and write `out_dir/manifest.json`; returns the manifest."""
    # dict.fromkeys: a weight file two graphs share (ViT-H's encoder.onnx.data) is hashed once.
    names = dict.fromkeys(name for r in reports for name in r.files)
    files = {name: file_entry(out_dir / name) for name in names}
    manifest = Manifest(
        model_id=model_id_of(files),
        variant=config.variant,
        kind="sam" if config.is_plain_sam else "focsam",
        config=config,
        source=source,
        opset=opset,
        versions={"focsam_onnx": __version__, "torch": torch.__version__,
                  "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        files=files,
        graphs={r.name: GRAPHS_BY_NAME[r.name].to_dict() for r in reports},
        parity={r.name: GraphParity(r.parity, r.simplified, tuple(r.notes)) for r in reports},
    )
    save_manifest(out_dir, manifest)
    return manifest


def _onnx_format(path: Path) -> dict:
    """The opset and IR version a graph file was written with (what a runtime must read)."""
    if path.suffix != ".onnx":
        return {}
    graph = onnx.load(str(path), load_external_data=False)
    opset = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    return {"opset": opset, "ir_version": graph.ir_version}


def model_id_of(files: dict[str, FileEntry]) -> str:
    """The weights' identity: a hash over every file's hash."""
    return hashlib.sha256(
        "".join(f"{n}:{e.sha256}" for n, e in sorted(files.items())).encode()).hexdigest()


def save_manifest(out_dir: Path, manifest: Manifest) -> None:
    atomic_write(out_dir / MANIFEST, json.dumps(manifest.to_dict(), indent=2) + "\n")
