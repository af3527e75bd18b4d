"""manifest.json, typed: what an exported model directory holds and how to trust it.

The exporter writes a `Manifest` and every reader (engine, bench, CLI) gets one back from
`Manifest.from_dict`, which checks the whole schema and names the first field that is wrong.
Torch-free, so the engine can read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from focsam_onnx.config import FocSAMConfig
from focsam_onnx.engine.graph_spec import CLICK_PRECISIONS, DEFAULT_PRECISION, PRECISIONS
from focsam_onnx.errors import DamagedData

# 2: typed schema, per-file opset and IR version, per-output parity.
# 3: each file's stamp and each graph file's external data: an open checks only what it loads.
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)  # 2 opens as before: every file hashed whole on every open
MANIFEST = "manifest.json"


class ManifestError(DamagedData):
    """manifest.json does not follow the schema; the message names the field."""


@dataclass(frozen=True)
class FileEntry:
    """One file of the model directory. Graph files also record what was actually written."""

    size: int
    sha256: str
    opset: int | None = None  # the ai.onnx opset imported by the saved graph
    ir_version: int | None = None
    # Format 3: a hash of the size and of samples of the content (engine/integrity.py), checked
    # on every open; the full sha256 is checked at export and by `focsam-onnx verify`.
    stamp: str | None = None
    external_data: tuple[str, ...] = ()  # the files a graph file keeps its weights in


@dataclass(frozen=True)
class Source:
    """Where the weights came from: a checkpoint (path, sha256) or random init (variant, seed)."""

    kind: str  # "sam" or "focsam" (a checkpoint), or "random-init"
    path: str | None = None
    sha256: str | None = None
    variant: str | None = None
    seed: int | None = None
    code: str | None = None  # bench's exports: fingerprint of the code that made them


@dataclass(frozen=True)
class GraphParity:
    """The parity gate's verdict for one graph: max abs ORT-vs-torch difference per output."""

    max_abs_diff: dict[str, float]
    simplified: bool
    notes: tuple[str, ...] = ()

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)


@dataclass(frozen=True)
class GateFigures:
    """A reduced-precision encoder against fp32, as the export's quality gate measured it
    (export/quality_gate.py): the per-image minimum embedding cosine and the maximum abs
    difference; the fp32-vs-reduced mask IoU over `clicks` replayed clicks."""

    cases: tuple[str, ...]  # the gate's images
    clicks: int
    min_cosine: float
    max_abs: float
    mean_mask_iou: float
    min_mask_iou: float
    thresholds: dict[str, float]  # the limits it passed


@dataclass(frozen=True)
class EncoderPrecision:
    """One encoder precision an export offers: the file it runs and on which runtime."""

    file: str
    runtime: str  # "onnxruntime" or "openvino"
    gate: GateFigures | None = None  # None for fp32, the reference


@dataclass(frozen=True)
class ClickGate:
    """The click graphs at a reduced precision against fp32, as the export's click-replay gate
    measured them (export/click_gate.py), per embedding precision (the keys of each dict):
    the fp32-vs-reduced mask IoU over `clicks` replayed clicks, and the objects whose
    NoC@90 differs. Recorded whether it passed or not."""

    cases: tuple[str, ...]  # the gate's images
    objects: int
    clicks: int  # masks compared per embedding precision
    mean_mask_iou: dict[str, float]
    min_mask_iou: dict[str, float]
    noc90_differs: dict[str, float]  # objects whose NoC@90 is not fp32's
    thresholds: dict[str, float]  # the limits it was held to
    passed: bool


@dataclass(frozen=True)
class ClickPrecision:
    """One precision of the click graphs (decoder and refiner): its runtime and gate."""

    runtime: str  # "onnxruntime" or "openvino"
    gate: ClickGate | None = None  # None for fp32, the reference

    @property
    def offered(self) -> bool:
        return self.gate is None or self.gate.passed


def _fp32_clicks() -> dict[str, ClickPrecision]:
    return {DEFAULT_PRECISION: ClickPrecision(CLICK_PRECISIONS[DEFAULT_PRECISION])}


def _fp32_only() -> dict[str, EncoderPrecision]:
    spec = PRECISIONS[DEFAULT_PRECISION]
    return {spec.name: EncoderPrecision(spec.filename, spec.runtime)}


@dataclass(frozen=True)
class Manifest:
    model_id: str  # sha256 over the graph files' hashes: the weights' identity
    variant: str
    kind: str  # "focsam" or "sam" (no refiner graph)
    config: FocSAMConfig
    source: Source
    opset: int  # the opset asked for; each graph's actual opset is in `files`
    versions: dict[str, str]  # package -> version at export time
    exported_at: str
    files: dict[str, FileEntry]
    graphs: dict[str, dict]  # graph name -> its IO spec at export time (GraphSpec.to_dict)
    parity: dict[str, GraphParity]
    # Reduced precisions are added by export/encoder_precision.py once their gate passed.
    encoder_precisions: dict[str, EncoderPrecision] = dataclasses.field(
        default_factory=_fp32_only)
    # The click graphs' precisions, with every gate run, passed or not (export/click_gate.py).
    click_precisions: dict[str, ClickPrecision] = dataclasses.field(
        default_factory=_fp32_clicks)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["config"] = self.config.to_dict()
        for entry in data["files"].values():  # written only when there (format 2 has neither)
            if entry["stamp"] is None:
                del entry["stamp"]
            if entry["external_data"]:
                entry["external_data"] = list(entry["external_data"])
            else:
                del entry["external_data"]
        for entry in data["parity"].values():
            entry["notes"] = list(entry["notes"])
        for entry in data["encoder_precisions"].values():
            if entry["gate"] is None:
                del entry["gate"]
            else:
                entry["gate"]["cases"] = list(entry["gate"]["cases"])
        for entry in data["click_precisions"].values():
            if entry["gate"] is None:
                del entry["gate"]
            else:
                entry["gate"]["cases"] = list(entry["gate"]["cases"])
        return data

    @classmethod
    def from_dict(cls, data: object) -> Manifest:
        if not isinstance(data, Mapping):
            raise ManifestError(f"the manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ManifestError(f"format_version is {version!r}; this focsam-onnx reads format "
                                f"{' and '.join(map(str, READABLE_VERSIONS))}")
        try:
            config = FocSAMConfig.from_dict(_get(data, "config", Mapping))
        except ValueError as err:
            raise ManifestError(str(err)) from None
        files = {name: _file_entry(entry, f"files[{name!r}]")
                 for name, entry in _get(data, "files", Mapping).items()}
        parity = {}
        for name, entry in _get(data, "parity", Mapping).items():
            entry = dict(_require(entry, Mapping, f"parity[{name!r}]"))
            entry["notes"] = tuple(_require(entry.get("notes", []), list,
                                            f"parity[{name!r}].notes"))
            parity[name] = _record(GraphParity, entry, f"parity[{name!r}]")
        precisions = {name: _encoder_precision(entry, f"encoder_precisions[{name!r}]")
                      for name, entry in _require(data.get("encoder_precisions", {}), Mapping,
                                                  "encoder_precisions").items()}
        clicks = {name: _click_precision(entry, f"click_precisions[{name!r}]")
                  for name, entry in _require(data.get("click_precisions", {}), Mapping,
                                              "click_precisions").items()}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ManifestError(f"unknown field(s) {unknown}: written by another focsam-onnx")
        return cls(
            model_id=_get(data, "model_id", str), variant=_get(data, "variant", str),
            kind=_get(data, "kind", str), config=config,
            source=_record(Source, _get(data, "source", Mapping), "source"),
            opset=_get(data, "opset", int), versions=dict(_get(data, "versions", Mapping)),
            exported_at=_get(data, "exported_at", str), files=files,
            graphs=dict(_get(data, "graphs", Mapping)), parity=parity,
            encoder_precisions=precisions or _fp32_only(),
            click_precisions=clicks or _fp32_clicks(), format_version=version,
        )


def _file_entry(data: object, where: str) -> FileEntry:
    entry = dict(_require(data, Mapping, where))
    if "external_data" in entry:
        entry["external_data"] = tuple(_require(entry["external_data"], list,
                                                f"{where}.external_data"))
    return _record(FileEntry, entry, where)


def _encoder_precision(data: object, where: str) -> EncoderPrecision:
    entry = dict(_require(data, Mapping, where))
    if "gate" in entry:
        gate = dict(_require(entry["gate"], Mapping, f"{where}.gate"))
        gate["cases"] = tuple(_require(gate.get("cases", []), list, f"{where}.gate.cases"))
        entry["gate"] = _record(GateFigures, gate, f"{where}.gate")
    return _record(EncoderPrecision, entry, where)


def _click_precision(data: object, where: str) -> ClickPrecision:
    entry = dict(_require(data, Mapping, where))
    if "gate" in entry:
        gate = dict(_require(entry["gate"], Mapping, f"{where}.gate"))
        gate["cases"] = tuple(_require(gate.get("cases", []), list, f"{where}.gate.cases"))
        entry["gate"] = _record(ClickGate, gate, f"{where}.gate")
    return _record(ClickPrecision, entry, where)


def _require(value: object, kind: type | tuple[type, ...], where: str):
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ManifestError(f"field {where} must be {name}, got {value!r}"[:300])
    return value


def _get(data: Mapping, key: str, kind: type):
    if key not in data:
        raise ManifestError(f"field {key!r} is missing")
    return _require(data[key], kind, repr(key))


_FIELD_TYPES = {"int": int, "str": str, "bool": bool, "int | None": (int, type(None)),
                "str | None": (str, type(None)), "dict[str, float]": Mapping,
                "tuple[str, ...]": tuple, "float": (int, float), "dict": Mapping}


def _record(kind: type, data: object, where: str):
    """`kind(**data)`, every field present (unless defaulted) and of its declared type."""
    data = _require(data, Mapping, where)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ManifestError(f"field {where} has unknown keys {unknown}")
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"field {where}.{name} is missing")
            continue
        _require(data[name], _FIELD_TYPES.get(f.type, object), f"{where}.{name}")
    values = dict(data)
    if "max_abs_diff" in values:
        values["max_abs_diff"] = {str(k): _require(v, (int, float), f"{where}.max_abs_diff")
                                  for k, v in values["max_abs_diff"].items()}
    return kind(**values)
