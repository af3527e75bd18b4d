"""The parity gate: onnxruntime against the torch module, on representative inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from focsam_onnx.engine.graph_spec import GraphSpec
from focsam_onnx.engine.model_dir import graph_session


class ParityError(RuntimeError):
    """An exported graph disagrees with the torch module beyond tolerance."""


@dataclass(frozen=True)
class ParityCase:
    """Named inputs for one graph, in the graph's input order."""

    name: str
    inputs: tuple[torch.Tensor, ...]


def check_parity(path: Path, spec: GraphSpec, module: torch.nn.Module, cases: list[ParityCase],
                 tolerance: float, threads: int | None = None) -> float:
    """Run every case through torch and onnxruntime; return the largest abs difference.

    Raises ParityError naming the graph, the case, the output and the difference when any
    output differs by more than `tolerance`.
    """
    session = graph_session(path, spec, threads or torch.get_num_threads())
    worst = 0.0
    for case in cases:
        with torch.no_grad():
            expected = module(*case.inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = {name: t.numpy() for name, t in zip(spec.input_names, case.inputs)}
        actual = session.run(spec.output_names, feeds)
        for name, want, got in zip(spec.output_names, expected, actual):
            diff = float(np.max(np.abs(want.numpy() - got))) if got.size else 0.0
            if not np.isfinite(diff) or diff > tolerance:
                raise ParityError(f"{spec.filename}: output {name!r} differs from torch by "
                                  f"{diff:.3g} (tolerance {tolerance:g}) on case {case.name!r}")
            worst = max(worst, diff)
    return worst
