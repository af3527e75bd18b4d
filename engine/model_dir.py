"""An exported model directory: its manifest, integrity checks and onnxruntime sessions."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from focsam_onnx.engine.encoder_runtime import (
    DEFAULT_PRECISION,
    PRECISIONS,
    EncoderRuntime,
    open_encoder,
)
from focsam_onnx.engine.graph_spec import DECODER, ENCODER, GRAPHS, GraphContractError, GraphSpec
from focsam_onnx.engine.manifest import MANIFEST, Manifest, ManifestError
from focsam_onnx.engine.threads import resolve_threads
from focsam_onnx.errors import DamagedData, InvalidInput

log = logging.getLogger(__name__)


class ModelDirError(DamagedData):
    """The model directory is missing, damaged or of another format: re-export it."""


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir: Path) -> Manifest:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ModelDirError(f"{path} not found: {model_dir} is not an exported model directory; "
                            "create one with `focsam-onnx export`")
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path} is not valid JSON ({err}); re-export the model") from None
    except ManifestError as err:
        raise ModelDirError(f"{path}: {err}; re-export the model with this version's "
                            "`focsam-onnx export`") from None


def verify_files(model_dir: Path, manifest: Manifest, hash_files: bool = True) -> None:
    """Check every file listed in the manifest for presence, size and (optionally) sha256."""
    for name, meta in manifest.files.items():
        path = Path(model_dir) / name
        hint = "re-export the model with `focsam-onnx export`"
        if not path.is_file():
            raise ModelDirError(f"{path} is missing; {hint}")
        size = path.stat().st_size
        if size != meta.size:
            raise ModelDirError(f"{path} has {size} bytes, the manifest says {meta.size} "
                                f"(truncated or replaced); {hint}")
        if hash_files and file_sha256(path) != meta.sha256:
            raise ModelDirError(f"{path} does not match its sha256 in the manifest "
                                f"(altered after export); {hint}")


def session_options(threads: int, spinning: bool = False) -> ort.SessionOptions:
    """Options of every session the engine makes; `threads` intra-op threads.

    No thread spinning by default: an engine runs several sessions in one process (encoder,
    decoder, refiner; `serve` encodes in the background while the user clicks), and a pool that
    busy-waits after its run steals the cores of the next session's run. Measured: our decoder
    taking turns with another spinning session, 63-68 ms per run instead of 34 ms (vit_b,
    2 threads, quiet machine); on the shared, loaded machine the decoder ran 17 % slower alone
    and 34 % slower taking turns with the refiner when both spun (bench/RESULTS.md).
    Large graphs gain nothing from spinning: their parallel regions are long. `spinning=True`
    is there for a process that runs one small graph back to back and has cores to spare."""
    opts = ort.SessionOptions()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def encoder_session_options(threads: int) -> ort.SessionOptions:
    """The encoder runs once per image: no memory arena, which would keep its peak forever.

    Measured on ViT-H (2 threads): 4.9 GB peak without the arena, 6.7 GB with it, same speed.
    """
    opts = session_options(threads)
    opts.enable_cpu_mem_arena = False
    return opts


# onnxruntime rewrites measured to slow a graph down. Fusing the decoder's residual adds into
# its image-token LayerNorms (SkipLayerNormalization) costs 2.6 ms per (1, 4096, 256) norm
# against 0.3 ms unfused: the decoder runs 12% faster without it.
DISABLED_OPTIMIZERS = {"decoder": ["SkipLayerNormFusion"]}


def graph_session(path: Path, spec: GraphSpec, threads: int,
                  spinning: bool = False) -> ort.InferenceSession:
    """The one way a graph's session is made: its options, `threads` threads, and its inputs and
    outputs held against the spec (names, ranks, static dims, dtypes)."""
    if spec.name == "encoder":
        opts = encoder_session_options(threads)
    else:
        opts = session_options(threads, spinning)
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=DISABLED_OPTIMIZERS.get(spec.name))
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelDirError(f"onnxruntime cannot load {path}: {err}; re-export the model") from None
    try:
        spec.check_session(session, str(path))
    except GraphContractError as err:
        raise ModelDirError(f"{err}; re-export the model") from None
    return session


@dataclass
class ModelDir:
    """The verified manifest, the encoder at one precision and the other graphs' onnxruntime
    sessions, built once."""

    path: Path
    manifest: Manifest
    sessions: dict[str, ort.InferenceSession]  # decoder and (FocSAM) refiner
    threads: int
    encoder: EncoderRuntime
    encoder_precision: str = DEFAULT_PRECISION

    @property
    def model_id(self) -> str:
        """Identity of the weights: changes whenever any graph file changes."""
        return self.manifest.model_id

    @property
    def variant(self) -> str:
        return self.manifest.variant

    @property
    def has_refiner(self) -> bool:
        return "refiner" in self.sessions

    @property
    def expand_ratio(self) -> tuple[float, float]:
        refiner = self.manifest.config.refiner
        if refiner is None:
            raise ValueError(f"{self.path} is a plain-SAM export: it has no refiner")
        return refiner.expand_ratio


def open_model_dir(path: str | Path, threads: int | None = None, hash_files: bool = True,
                   encoder_precision: str = DEFAULT_PRECISION) -> ModelDir:
    """Load `path` exported by `focsam-onnx export`; raise ModelDirError saying what to do.

    `encoder_precision` (fp32, bf16 or int8) picks the encoder's runtime; a reduced one must
    have passed the quality gate at export (`focsam-onnx export --encoder-precision ...`).
    """
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest, hash_files)
    offered = manifest.encoder_precisions
    if encoder_precision not in offered:
        if encoder_precision not in PRECISIONS:
            raise InvalidInput(f"encoder precision must be one of {sorted(PRECISIONS)}, "
                               f"got {encoder_precision!r}")
        raise ModelDirError(f"{path} offers encoder precisions {sorted(offered)}, not "
                            f"{encoder_precision}: export it with `focsam-onnx export "
                            f"--encoder-precision {encoder_precision}` (which runs its quality "
                            "gate)")
    return load_model_dir(path, manifest, threads, encoder_precision)


def load_model_dir(path: Path, manifest: Manifest, threads: int | None,
                   encoder_precision: str = DEFAULT_PRECISION) -> ModelDir:
    """The sessions of an already checked `manifest` (the export's quality gate uses this
    before its reduced precisions are offered)."""
    threads = resolve_threads(threads)
    sessions = {}
    for spec in GRAPHS:
        if spec is ENCODER or spec.filename not in manifest.files:
            continue  # plain-SAM exports have no refiner
        sessions[spec.name] = graph_session(path / spec.filename, spec, threads)
    for spec in (ENCODER, DECODER, PRECISIONS[encoder_precision]):
        if spec.filename not in manifest.files:
            raise ModelDirError(f"{path} has no {spec.filename} in its manifest; re-export")
    encoder = open_encoder(path, encoder_precision, threads)
    log.debug("opened %s (%s, %s encoder) with %d threads", path, manifest.variant,
              encoder_precision, threads)
    return ModelDir(path, manifest, sessions, threads, encoder, encoder_precision)
