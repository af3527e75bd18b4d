"""The layers, read from the source: models/ (torch) and engine/ (numpy + onnxruntime) never
import each other; export/ may import both; serve/ (the web app) stands on the engine alone; Ray
stays in cluster/. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "models": ("focsam_onnx.engine", "focsam_onnx.export", "focsam_onnx.cli"),
    "engine": ("focsam_onnx.models", "focsam_onnx.export", "focsam_onnx.cli", "focsam_onnx.serve",
               "focsam_onnx.cluster", "torch", "ray"),
    "serve": ("focsam_onnx.models", "focsam_onnx.export", "focsam_onnx.cli", "torch"),
    "integrations": ("focsam_onnx.models", "focsam_onnx.export", "focsam_onnx.cli",
                     "focsam_onnx.serve", "torch"),
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports, at any depth (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert len(files) >= 5, files
    offences = [f"{path.relative_to(PACKAGE)} imports {name}"
                for path in files for name in sorted(imported_modules(path))
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer])]
    assert offences == []


def test_the_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from focsam_onnx.engine.roi import Roi\n    import torch\n")
    assert {"focsam_onnx.engine.roi", "torch"} <= imported_modules(source)
