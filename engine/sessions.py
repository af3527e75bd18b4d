"""Session construction, the one factory: options, threads, and each graph held against its spec.

A leaf of the engine: it imports only the graph contract, so that the model folder's loader,
the encoder runtimes, export's parity gate and the bench all build their sessions here without
importing one another. `ModelDirError` is the model folder's error, raised here for a graph
onnxruntime cannot load and by the loader for a folder that is missing or damaged.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from focsam_onnx.engine.graph_spec import GraphContractError, GraphSpec
from focsam_onnx.errors import DamagedData, NotFound


class ModelDirError(DamagedData):
    """The model folder is damaged or of another format: re-export it."""


class ModelDirNotFound(ModelDirError, NotFound):
    """No exported model folder at the path given."""

    http_status = NotFound.http_status


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
