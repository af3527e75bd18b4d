"""The layers, read from the source: who may import whom, and no import circles.

Every top-level folder and root module of the package is a layer listed in LAYERS with the
layers it may import and the third-party packages it must not; a folder nobody listed fails
the test, so a new one gets a decision, not a default. Inside
the package, the modules' import graph (lazy imports inside functions count too) has no
circle: a circle is a strongly connected component of more than one module. An optional
dependency imported through `errors.require("module", ...)` counts as an import.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
NAME = "focsam_onnx"
NOT_PACKAGE = {"tests", "docs", "examples"}  # top-level folders that are not installed code

TORCH = ("torch", "torchvision", "segment_anything")
EXPORT_TOOLS = ("onnx", "onnxsim", "onnxscript", "onnx_ir")
WEB = ("fastapi", "uvicorn", "starlette", "pycocotools")
EVALUATE_EXTRA = ("scipy", "matplotlib")


@dataclass(frozen=True)
class Layer:
    may_import: frozenset[str]  # other layers (a layer may always import itself)
    never: tuple[str, ...] = ()  # third-party top-level packages it must not import
    stdlib_only: bool = False  # besides may_import, the standard library and nothing else


def layer(*may_import: str, never: tuple[str, ...] = (), stdlib_only: bool = False) -> Layer:
    return Layer(frozenset(may_import), never, stdlib_only)


# Layer names: a top-level folder, or a root module's file name. "__init__.py" is the
# package's face (`from focsam_onnx import ...`), also imported for `__version__`.
LAYERS: dict[str, Layer] = {
    "errors.py": layer(stdlib_only=True),  # the one error base: the leaf under everything
    "config.py": layer("errors.py", stdlib_only=True),
    # uvicorn on a socket that listens before the URL is announced: serve/ and integrations/.
    "asgi.py": layer(never=(*TORCH, *EXPORT_TOOLS, *EVALUATE_EXTRA, "ray", "onnxruntime")),
    "weights": layer("errors.py", stdlib_only=True),
    "models": layer("config.py", "errors.py", never=("ray", *EXPORT_TOOLS, *WEB)),
    # numpy + onnxruntime: load, encode, click, cache, geometry; the format every layer reads.
    "engine": layer("config.py", "errors.py",
                    never=(*TORCH, *EXPORT_TOOLS, *WEB, *EVALUATE_EXTRA, "ray")),
    "evaluation": layer("engine", "config.py", "errors.py", "__init__.py",
                        never=(*TORCH, *EXPORT_TOOLS, *WEB, "ray")),
    "export": layer("models", "engine", "evaluation", "config.py", "errors.py", "__init__.py",
                    never=(*WEB, "ray")),
    # The saved labels as datasets (COCO, YOLO, LabelMe, VOC): numpy, OpenCV, Pillow and
    # pycocotools; no engine, so that converting needs no model. serve/ offers its downloads.
    "labels": layer("errors.py", never=(*TORCH, *EXPORT_TOOLS, "fastapi", "uvicorn",
                                        "starlette", *EVALUATE_EXTRA, "ray", "onnxruntime")),
    # cluster/: `serve --ray` encodes on its pool (imported only then; ray stays cluster's).
    "serve": layer("engine", "cluster", "labels", "asgi.py", "config.py", "errors.py",
                   "__init__.py", never=(*TORCH, *EXPORT_TOOLS, *EVALUATE_EXTRA, "ray")),
    # Annotation tools' backends (Label Studio, CVAT): clients of the engine like serve/, not of
    # serve/ itself, so that each can be deployed without the page.
    "integrations": layer("engine", "asgi.py", "config.py", "errors.py", "__init__.py",
                          never=(*TORCH, *EXPORT_TOOLS, *EVALUATE_EXTRA, "ray")),
    # The demo model's trainer (torch): the model, the engine's geometry and the clicker that
    # evaluation uses, so training clicks as the NoC protocol does; nothing imports it. weights/:
    # release.py writes the packaged demo checkpoint where the catalogue says it lies.
    "training": layer("models", "engine", "evaluation", "weights", "config.py", "errors.py",
                      never=(*EXPORT_TOOLS, *WEB, "ray")),
    "cluster": layer("engine", "config.py", "errors.py",
                     never=(*TORCH, *EXPORT_TOOLS, *WEB, *EVALUATE_EXTRA)),
    "bench": layer("models", "export", "engine", "evaluation", "serve", "cluster", "config.py",
                   "errors.py", "__init__.py"),
    "__init__.py": layer("engine", "evaluation", "config.py", "errors.py",
                         never=(*TORCH, *EXPORT_TOOLS, *WEB, "ray")),
    "cli.py": layer("models", "export", "engine", "evaluation", "serve", "cluster", "bench",
                    "weights", "integrations", "labels", "config.py", "errors.py", "__init__.py"),
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # an internal module (dotted) or a third-party top-level name
    internal: bool
    line: int


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at `root` (installed as NAME), dotted name -> file."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] in NOT_PACKAGE or any(p.startswith(".") for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((NAME, *parts))] = path
    return found


def layer_of(module: str, modules: dict[str, Path]) -> str:
    """The top-level folder `module` lies in, or the root module's file name."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__.py"
    top = f"{NAME}.{parts[0]}"
    return parts[0] if modules[top].name == "__init__.py" else modules[top].name


def module_imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """What `module` imports, at any depth (functions included), resolved to modules of the
    package where it is one, else to the third-party package's top-level name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b`: the module a.b where there is one, else a itself
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                     for a in node.names]
        elif isinstance(node, ast.Call) and _names_a_module(node):
            names = [node.args[0].value]  # require("scipy.io", ...), importlib.import_module
        else:
            continue
        for name in names:
            if name == NAME or name.startswith(NAME + "."):
                while name not in modules:
                    name = name.rpartition(".")[0]
                if name != module:
                    yield Import(module, name, True, node.lineno)
            else:
                yield Import(module, name.split(".")[0], False, node.lineno)


def _names_a_module(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return (name in ("require", "import_module") and bool(call.args)
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str))


def import_graph(root: Path) -> tuple[dict[str, Path], list[Import]]:
    modules = find_modules(root)
    return modules, [i for m, p in modules.items() for i in module_imports(m, p, modules)]


def layering_offences(root: Path) -> list[str]:
    """Each import a layer may not make, and each layer LAYERS does not list."""
    modules, imports = import_graph(root)
    offences = [f"{name}: a layer nobody listed; decide in tests/test_layering.py LAYERS "
                "what it may import"
                for name in sorted({layer_of(m, modules) for m in modules} - set(LAYERS))]
    for i in imports:
        source = layer_of(i.source, modules)
        rules = LAYERS.get(source)
        if rules is None:
            continue
        where = f"{modules[i.source].relative_to(root)}:{i.line} imports {i.target}"
        if i.internal:
            target = layer_of(i.target, modules)
            if target != source and target not in rules.may_import:
                offences.append(f"{where}: {source} may not import {target}")
        elif i.target in rules.never:
            offences.append(f"{where}: {source} never imports {i.target}")
        elif rules.stdlib_only and i.target not in sys.stdlib_module_names:
            offences.append(f"{where}: {source} uses the standard library only")
    return offences


def import_circles(root: Path) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    modules, imports = import_graph(root)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for i in imports:
        if i.internal:
            edges[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # the import graph is shallow: recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return sorted(circles)


def test_every_layer_imports_only_what_it_may():
    assert layering_offences(PACKAGE) == []


def test_there_is_no_import_circle():
    assert import_circles(PACKAGE) == []


def test_every_layer_is_listed_and_installed():
    modules = find_modules(PACKAGE)
    assert {layer_of(m, modules) for m in modules} == set(LAYERS)
    folders = {m for m, path in modules.items() if path.name == "__init__.py"}
    listed = re.search(r"^packages = \[(.*?)\]", (PACKAGE / "pyproject.toml").read_text(),
                       re.S | re.M)
    packages = set(re.findall(r'"([^"]+)"', listed.group(1)))
    assert folders == packages  # every package folder is installed


def test_the_graph_sees_every_module_and_its_lazy_imports():
    modules, imports = import_graph(PACKAGE)
    assert len(modules) >= 80
    edges = {(i.source, i.target) for i in imports}
    # cli.py imports the engine inside its commands only
    assert (f"{NAME}.cli", f"{NAME}.engine.loaded_model") in edges
    assert (f"{NAME}.export.exporter", "torch") in edges
    assert (f"{NAME}.evaluation.datasets", "scipy") in edges  # through errors.require


# The checks themselves, on planted trees: each must refuse what it is for.

def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"__init__.py": "", "config.py": "", "engine/__init__.py": "",
                       "models/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_planted_circle_is_refused_lazy_imports_included(tmp_path):
    root = _tree(tmp_path, {
        "engine/a.py": "from focsam_onnx.engine.b import g\n",
        "engine/b.py": "def g():\n    from focsam_onnx.engine import c\n",
        "engine/c.py": "import focsam_onnx.engine.a\n",
        "engine/d.py": "from focsam_onnx.engine.a import x\n",  # into the circle, not of it
    })
    assert import_circles(root) == [[f"{NAME}.engine.a", f"{NAME}.engine.b", f"{NAME}.engine.c"]]


def test_a_planted_upward_import_is_refused(tmp_path):
    root = _tree(tmp_path, {
        "engine/ok.py": "import numpy\nfrom focsam_onnx.config import IMAGE_SIZE\n",
        "engine/up.py": "def f():\n    from focsam_onnx.models.focsam import FocSAM\n"
                        "    import torch\n    require('ray', 'x', 'ray')\n",
        "models/focsam.py": "",
        "models/m.py": "from ..engine import ok\n",  # relative imports count too
    })
    assert layering_offences(root) == [
        "engine/up.py:2 imports focsam_onnx.models.focsam: engine may not import models",
        "engine/up.py:3 imports torch: engine never imports torch",
        "engine/up.py:4 imports ray: engine never imports ray",
        "models/m.py:1 imports focsam_onnx.engine.ok: models may not import engine",
    ]


@pytest.mark.parametrize("name", ["scratch", "plugins"])
def test_a_folder_nobody_listed_is_refused(tmp_path, name):
    assert name not in LAYERS
    root = _tree(tmp_path, {f"{name}/__init__.py": "", f"{name}/x.py": "import numpy\n"})
    assert layering_offences(root) == [
        f"{name}: a layer nobody listed; decide in tests/test_layering.py LAYERS what it may "
        "import"]


def test_standard_library_only_layers_are_held_to_it(tmp_path):
    root = _tree(tmp_path, {"weights/__init__.py": "", "weights/w.py": "import json, requests\n"})
    assert layering_offences(root) == [
        "weights/w.py:1 imports requests: weights uses the standard library only"]
