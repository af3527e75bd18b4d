"""A loaded model: an exported folder's checked manifest and the sessions of the graphs opened.

`open_model_dir` reads the manifest, checks the files it is about to load (size and stamp, see
engine/integrity.py) and builds only the sessions asked for: an encode-only worker passes
`graphs=ENCODER_ONLY` and never reads the decoder or the refiner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from focsam_onnx.engine.click_runtime import open_click_graph
from focsam_onnx.engine.encoder_runtime import EncoderRuntime, open_encoder
from focsam_onnx.engine.graph_spec import (
    DECODER,
    DEFAULT_PRECISION,
    ENCODER,
    PRECISIONS,
    REFINER,
    get_click_precision,
    get_precision,
)
from focsam_onnx.engine.integrity import verify_files
from focsam_onnx.engine.manifest import MANIFEST, Manifest, ManifestError
from focsam_onnx.engine.sessions import ModelDirError, ModelDirNotFound
from focsam_onnx.engine.threads import resolve_threads
from focsam_onnx.errors import InvalidInput

log = logging.getLogger(__name__)

CLICK_GRAPHS = (ENCODER.name, DECODER.name, REFINER.name)  # everything a click needs
ENCODER_ONLY = (ENCODER.name,)  # batch and background encoding


def read_manifest(model_dir: Path) -> Manifest:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        kind = ModelDirError if Path(model_dir).is_dir() else ModelDirNotFound
        raise kind(f"{path} not found: {model_dir} is not an exported model directory; "
                   "create one with `focsam-onnx export`")
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path} is not valid JSON ({err}); re-export the model") from None
    except ManifestError as err:
        raise ModelDirError(f"{path}: {err}; re-export the model with this version's "
                            "`focsam-onnx export`") from None


class _NotOpened:
    """The encoder of a model opened without it: running it is a caller's bug."""

    precision = None

    def run(self, network_input: np.ndarray) -> np.ndarray:
        raise RuntimeError("this model was opened without its encoder (see `graphs`)")


@dataclass
class LoadedModel:
    """The checked manifest, the encoder at one precision and the click graphs at another,
    built once; only the graphs asked for are loaded."""

    path: Path
    manifest: Manifest
    # The decoder and (FocSAM) refiner, when opened: onnxruntime sessions (fp32) or OpenVINO
    # graphs run the same way (bf16, engine/click_runtime.py).
    sessions: dict[str, ort.InferenceSession]
    threads: int
    encoder: EncoderRuntime
    encoder_precision: str = DEFAULT_PRECISION
    click_precision: str = DEFAULT_PRECISION

    @property
    def precisions(self) -> tuple[str, str]:
        """(encoder, click graphs): what cached embeddings and session states depend on."""
        return self.encoder_precision, self.click_precision

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
            raise InvalidInput(f"{self.path} is a plain-SAM export: it has no refiner")
        return refiner.expand_ratio


def open_model_dir(path: str | Path, threads: int | None = None,
                   encoder_precision: str = DEFAULT_PRECISION,
                   graphs: Collection[str] = CLICK_GRAPHS,
                   click_threads: int | None = None,
                   click_precision: str = DEFAULT_PRECISION) -> LoadedModel:
    """Load `path` exported by `focsam-onnx export`; raise ModelDirError saying what to do.

    Arguments:
        threads: onnxruntime intra-op threads per session (default: `resolve_threads`).
        click_threads: the decoder's and refiner's own count, where it differs (`serve` runs
            several clicks at once, each on fewer threads, and encodes on all of them).
        encoder_precision: fp32, bf16 or int8: the encoder's runtime; a reduced one must have
            passed the quality gate at export (`focsam-onnx export --encoder-precision ...`).
        click_precision: fp32 or bf16: the decoder's and refiner's runtime; bf16 must have
            passed the click-replay gate at export (`focsam-onnx export --click-precision bf16`).
        graphs: which of "encoder", "decoder", "refiner" to load (a plain-SAM export has no
            refiner; asking for it is not an error). Only their files are read and checked.
    Returns:
        The LoadedModel; its `sessions` hold the decoder and refiner that were asked for.
    """
    path = Path(path)
    graphs = _graph_names(graphs)
    manifest = read_manifest(path)
    get_precision(encoder_precision)
    offered = manifest.encoder_precisions
    if encoder_precision not in offered:
        raise ModelDirError(f"{path} offers encoder precisions {sorted(offered)}, not "
                            f"{encoder_precision}: export it with `focsam-onnx export "
                            f"--encoder-precision {encoder_precision}` (which runs its quality "
                            "gate)")
    get_click_precision(click_precision)
    clicks = manifest.click_precisions
    if click_precision not in clicks or not clicks[click_precision].offered:
        offered = sorted(name for name, p in clicks.items() if p.offered)
        raise ModelDirError(f"{path} offers click precisions {offered}, not {click_precision}: "
                            f"export it with `focsam-onnx export --click-precision "
                            f"{click_precision}` (which runs its click-replay gate)")
    files = _graph_files(path, manifest, graphs, encoder_precision)
    verify_files(path, manifest, files)
    return load_model_dir(path, manifest, threads, encoder_precision, graphs, click_threads,
                          click_precision)


def load_model_dir(path: Path, manifest: Manifest, threads: int | None,
                   encoder_precision: str = DEFAULT_PRECISION,
                   graphs: Collection[str] = CLICK_GRAPHS,
                   click_threads: int | None = None,
                   click_precision: str = DEFAULT_PRECISION) -> LoadedModel:
    """The sessions of `graphs` of an already checked `manifest` (the export's quality gates
    use this before their reduced precisions are offered)."""
    threads = resolve_threads(threads)
    click_threads = threads if click_threads is None else resolve_threads(click_threads)
    graphs = _graph_names(graphs)
    _graph_files(path, manifest, graphs, encoder_precision)  # each one listed
    sessions = {spec.name: open_click_graph(path / spec.filename, spec, click_precision,
                                            click_threads)
                for spec in (DECODER, REFINER)
                if spec.name in graphs and spec.filename in manifest.files}
    encoder = (open_encoder(path, encoder_precision, threads) if ENCODER.name in graphs
               else _NotOpened())
    log.debug("opened %s of %s (%s, %s encoder, %s click graphs) with %d threads",
              ", ".join(graphs), path, manifest.variant, encoder_precision, click_precision,
              threads)
    return LoadedModel(path, manifest, sessions, threads, encoder, encoder_precision,
                       click_precision)


def _graph_names(graphs: Collection[str]) -> tuple[str, ...]:
    if isinstance(graphs, str) or not set(graphs) <= set(CLICK_GRAPHS) or not graphs:
        raise InvalidInput(f"graphs must be some of {list(CLICK_GRAPHS)}, got {graphs!r}")
    return tuple(g for g in CLICK_GRAPHS if g in graphs)


def _graph_files(path: Path, manifest: Manifest, graphs: tuple[str, ...],
                 encoder_precision: str) -> list[str]:
    """The graph files opening `graphs` loads; ModelDirError for one the manifest lacks."""
    wanted = {ENCODER.name: PRECISIONS[encoder_precision].filename,
              DECODER.name: DECODER.filename, REFINER.name: REFINER.filename}
    files = []
    for name in graphs:
        filename = wanted[name]
        if filename in manifest.files:
            files.append(filename)
        elif name != REFINER.name:  # plain-SAM exports have no refiner
            raise ModelDirError(f"{path} has no {filename} in its manifest; re-export")
    return files
