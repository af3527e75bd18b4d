"""Import the official `segment-anything` package where torchvision is missing or broken.

`segment_anything/__init__.py` imports `predictor` (-> `utils/transforms.py`:
`from torchvision.transforms.functional import resize, to_pil_image`) and
`automatic_mask_generator` (`from torchvision.ops.boxes import batched_nms, box_area`) at import
time, although the model itself (`sam_model_registry`, `Sam`, the image encoder, prompt encoder,
mask decoder, and `segment_anything.utils.onnx.SamOnnxModel`) never calls torchvision.

`import_segment_anything()` makes the package importable anyway:

1. if `segment_anything` is already imported, it is returned as is;
2. if a torchvision is installed, a normal import is tried first;
3. otherwise (or if that import fails) placeholder modules `torchvision`, `torchvision.ops`,
   `torchvision.ops.boxes`, `torchvision.transforms` and `torchvision.transforms.functional`
   are put into `sys.modules` for the duration of the import and removed right after. Every
   attribute of a placeholder is a function that raises `TorchvisionUnavailableError` when
   called, so the few torchvision-backed helpers (`ResizeLongestSide.apply_image`, the
   automatic mask generator's NMS) fail loudly instead of computing something wrong.

Submodules imported later (e.g. `segment_anything.utils.onnx`) need no placeholders since the
package itself is then already in `sys.modules`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType

PLACEHOLDER_NAMES = (
    "torchvision",
    "torchvision.ops",
    "torchvision.ops.boxes",
    "torchvision.transforms",
    "torchvision.transforms.functional",
)


class TorchvisionUnavailableError(RuntimeError):
    """A torchvision function was called through a placeholder."""


def _unavailable(qualname: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise TorchvisionUnavailableError(
            f"{qualname} is unavailable: segment_anything was imported without torchvision by "
            "focsam_onnx.models.segment_anything_compat; only the model code works")

    fail.__name__ = qualname.rsplit(".", 1)[-1]
    fail.__qualname__ = qualname
    return fail


class _Placeholder(ModuleType):
    """A stand-in module whose every public attribute is a function that raises when called."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"placeholder for {name} (torchvision not importable)")
        self.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        self.__path__: list[str] = []

    def __getattr__(self, attr: str) -> Callable[..., None]:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _unavailable(f"{self.__name__}.{attr}")


def _drop_modules(prefixes: tuple[str, ...]) -> None:
    """Forget half-imported modules so that a second import attempt starts clean."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            del sys.modules[name]


def _import_with_placeholders() -> ModuleType:
    placeholders = {name: _Placeholder(name) for name in PLACEHOLDER_NAMES}
    sys.modules.update(placeholders)
    try:
        return importlib.import_module("segment_anything")
    finally:
        for name, module in placeholders.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_segment_anything() -> ModuleType:
    """Return the `segment_anything` module, importing it without torchvision if need be."""
    loaded = sys.modules.get("segment_anything")
    if loaded is not None:
        return loaded
    if importlib.util.find_spec("torchvision") is not None:
        try:
            return importlib.import_module("segment_anything")
        except (ImportError, RuntimeError, OSError, AttributeError):
            # A torchvision wheel built for another torch fails at import; fall back below.
            _drop_modules(("segment_anything", "torchvision"))
    return _import_with_placeholders()
