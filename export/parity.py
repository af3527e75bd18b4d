"""The parity gate: onnxruntime against the torch module, on representative inputs.

It holds the whole contract of a graph: the session against its spec (names, order, ranks,
static dims, dtypes), every case's outputs in number, order and shape against torch's, and every
value within that output's tolerance from the spec (the golden reference's tolerance, in
proportion to the values where they are larger than the reference's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from focsam_onnx.engine.graph_spec import GraphSpec
from focsam_onnx.engine.sessions import ModelDirError, graph_session
from focsam_onnx.errors import FocSAMError


class ParityError(FocSAMError):
    """An exported graph breaks its contract or disagrees with the torch module."""


@dataclass(frozen=True)
class ParityCase:
    """Named inputs for one graph, in the graph's input order."""

    name: str
    inputs: tuple[torch.Tensor, ...]


def check_parity(path: Path, spec: GraphSpec, module: torch.nn.Module, cases: list[ParityCase],
                 threads: int | None = None) -> dict[str, float]:
    """Run every case through torch and onnxruntime; return each output's largest abs diff.

    Raises ParityError naming the graph, the case, the output and what is wrong.
    """
    try:
        session = graph_session(path, spec, threads or torch.get_num_threads())
    except ModelDirError as err:
        raise ParityError(str(err)) from None
    worst = {name: 0.0 for name in spec.output_names}
    for case in cases:
        with torch.no_grad():
            expected = module(*case.inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = {name: t.numpy() for name, t in zip(spec.input_names, case.inputs, strict=True)}
        actual = session.run(None, feeds)
        where = f"{spec.filename}, case {case.name!r}"
        if len(expected) != len(spec.outputs) or len(actual) != len(spec.outputs):
            raise ParityError(f"{where}: torch gives {len(expected)} outputs, onnxruntime "
                              f"{len(actual)}, the spec {len(spec.outputs)} {spec.output_names}")
        for out, want, got in zip(spec.outputs, expected, actual):
            worst[out.name] = max(worst[out.name], _output_diff(out, want.numpy(), got, where))
    return worst


def max_abs_diff(a, b) -> float:
    """Largest |a - b| in float64 (numpy arrays or CPU tensors; 0.0 when both are empty)."""
    a, b = (np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, np.float64)
            for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b), initial=0.0))


def _output_diff(out, want: np.ndarray, got: np.ndarray, where: str) -> float:
    if got.shape != want.shape or not out.matches(got.shape):
        raise ParityError(f"{where}: output {out.name!r} has shape {list(got.shape)}, torch "
                          f"gives {list(want.shape)}, the spec says {list(out.shape)}")
    if got.dtype != want.dtype:
        raise ParityError(f"{where}: output {out.name!r} is {got.dtype}, torch gives {want.dtype}")
    diff = max_abs_diff(want, got)  # 0.0 only when both are empty: the shapes agree
    allowed = out.allowed_diff(float(np.max(np.abs(want), initial=0.0)))
    if not np.isfinite(diff) or diff > allowed:
        raise ParityError(f"{where}: output {out.name!r} differs from torch by {diff:.3g} "
                          f"(tolerance {allowed:.3g} at its values' scale)")
    return diff
