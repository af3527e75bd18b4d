"""Where an export's weights come from: an official checkpoint or a seeded random init, each
with the `Source` its manifest records; and quiet exporter logs. Every exporting caller (the
CLI, the bench, the demo model) builds its model here."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from focsam_onnx.config import get_variant
from focsam_onnx.engine.manifest import Source
from focsam_onnx.models.checkpoint import load_checkpoint
from focsam_onnx.models.focsam import FocSAM, build_model


def from_checkpoint(path: str | Path) -> tuple[FocSAM, Source]:
    """The model of an official SAM or FocSAM checkpoint (variant detected from its shapes)."""
    from focsam_onnx.engine.integrity import file_sha256

    model, info = load_checkpoint(path)
    return model, Source(info.kind, path=str(path), sha256=file_sha256(Path(path)))


def random_init_source(variant: str, seed: int = 0, code: str | None = None) -> Source:
    """The record of a seeded random init; `code` marks the code that made it (the bench
    keeps exports only while it is unchanged)."""
    return Source("random-init", variant=variant, seed=seed, code=code)


def random_init(variant: str, seed: int = 0, code: str | None = None) -> tuple[FocSAM, Source]:
    """A seeded random-init model of `variant` and its record."""
    return build_model(get_variant(variant), seed=seed), random_init_source(variant, seed, code)


def quiet_exporter_logs() -> None:
    """The ONNX exporters log every rewrite and warn about torchvision ("Skipping
    torchvision::nms", four lines per export); the parity gate checks every export instead.
    Importing torch configures its loggers, so this runs after that import to stick."""
    import torch  # noqa: F401  (see above)

    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "torch.onnx._internal.exporter"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.onnx"):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="# The axis name")
