"""focsam-onnx: FocSAM interactive segmentation as three ONNX graphs and a numpy click engine.

The public face, importable from the package itself (loaded on first use, so that
`import focsam_onnx` stays cheap for the command line):

    from focsam_onnx import FocSAMEngine, ClickSession, Click, Box
    engine = FocSAMEngine.open("exported/tiny")
    session = ClickSession(engine, engine.open_image("examples/shapes.png"))
    mask = session.click(170, 125).mask            # (H, W) bool; x is the column, y the row

Internal modules may move; these names stay.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "FocSAMEngine": "focsam_onnx.engine.focsam_engine",
    "EncodedImage": "focsam_onnx.engine.focsam_engine",
    "ClickSession": "focsam_onnx.engine.click_session",
    "ClickResult": "focsam_onnx.engine.click_session",
    "SessionState": "focsam_onnx.engine.click_session",
    "replay": "focsam_onnx.engine.click_session",
    "Click": "focsam_onnx.engine.prompts",
    "Box": "focsam_onnx.engine.prompts",
    "load_image": "focsam_onnx.engine.image_io",
    "SamPredictor": "focsam_onnx.engine.predictor",
    "FocSAMError": "focsam_onnx.errors",
    "InvalidInput": "focsam_onnx.errors",
    "NotFound": "focsam_onnx.errors",
    "DamagedData": "focsam_onnx.errors",
    "MissingExtra": "focsam_onnx.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'focsam_onnx' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
