"""The package's face: the names a script imports from `focsam_onnx` itself, loaded lazily."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import focsam_onnx

REPO = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_is_listed():
    for name in focsam_onnx.__all__:
        assert getattr(focsam_onnx, name) is not None, name
    assert set(focsam_onnx.__all__) <= set(dir(focsam_onnx))


def test_importing_the_package_loads_no_runtime():
    code = ("import sys, focsam_onnx.config; "
            "print(any(m.startswith(('onnxruntime', 'numpy')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_docstring_example_runs(tiny_model_dir):
    from focsam_onnx import Box, Click, ClickSession, FocSAMEngine, replay

    engine = FocSAMEngine.open(tiny_model_dir, threads=1)
    image = engine.open_image(REPO / "examples" / "shapes.png")
    session = ClickSession(engine, image)
    mask = session.click(170, 125).mask
    assert mask.shape == (240, 320) and mask.dtype == bool
    again = replay(engine, image, [Click(170, 125)]).result.mask
    np.testing.assert_array_equal(mask, again)
    assert replay(engine, image, [Box(40, 30, 230, 200), Click(150, 110)]).result.refiner_ran


def test_readme_python_example_runs(tiny_model_dir, tmp_path):
    readme = (REPO / "README.md").read_text()
    body = readme.split("## Use it from Python\n", 1)[1]
    example = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "tiny").symlink_to(tiny_model_dir)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    example += ("\nassert result.refiner_ran and result.mask.shape == (240, 320)"
                "\nimport numpy as np"
                "\nassert np.array_equal(same.result.mask, result.mask)"
                "\nassert boxed.result.refiner_ran\n")
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
