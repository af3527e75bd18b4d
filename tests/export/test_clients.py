"""Other runtimes and clients on the SAM-compatible pair, each installed from PyPI into the
pytest cache (never into the project's environment) and run in a subprocess.

* onnxruntime 1.16 (with the numpy < 2 it was built against) in a virtual environment of its
  own: the pair exported with --opset 17 must load and give the same numbers.
* samexporter's own `SegmentAnythingONNX` client. samexporter 0.5 pins torch==2.10.0 (and
  torchvision, onnx, opencv-python), so it cannot be a dev-extra dependency beside torch 2.13;
  its ONNX client needs only numpy, opencv, pillow and onnxruntime, so the test installs it
  with `pip install --no-deps --target` and puts that folder on the subprocess's PYTHONPATH.

Without network access these skip locally; under CI they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from focsam_onnx.engine.graph_spec import SAM_DECODER, SAM_ENCODER

OLD_ORT = "onnxruntime==1.16.3"
SAMEXPORTER = "samexporter>=0.5,<0.6"


def unavailable(reason: str) -> None:
    """Skip locally; under CI a missing client is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def pip(args: list[str], python: str | Path = sys.executable, timeout: int = 900) -> None:
    """`python -m pip ARGS`, or `unavailable` with pip's last line when it fails."""
    try:
        done = subprocess.run([str(python), "-m", "pip", "-q", "--disable-pip-version-check",
                               *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        unavailable(f"pip {' '.join(args)} timed out")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        unavailable(f"pip {' '.join(args)} failed: {last}")


def run_script(python: str | Path, script: str, args: list, env: dict | None = None,
               timeout: int = 600) -> str:
    """Run `script` (Python source) with `args` in `python`; returns stdout, fails with stderr."""
    done = subprocess.run([str(python), "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def old_runtime_python(request):
    venv = request.config.cache.mkdir("onnxruntime-1.16-venv")
    python = venv / "bin" / "python"
    if not (venv / "installed").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip(["install", OLD_ORT, "numpy<2"], python)
        (venv / "installed").write_text(OLD_ORT + "\n")
    return python


OLD_RUNTIME_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
d, io = sys.argv[1], dict(np.load(sys.argv[2]))
enc = ort.InferenceSession(d + "/sam_encoder.onnx", providers=["CPUExecutionProvider"])
dec = ort.InferenceSession(d + "/sam_decoder.onnx", providers=["CPUExecutionProvider"])
(emb,) = enc.run(None, {"input_image": io["input_image"]})
feeds = {i.name: io[i.name] for i in dec.get_inputs() if i.name != "image_embeddings"}
masks, iou, low = dec.run(None, {"image_embeddings": emb, **feeds})
np.savez(sys.argv[3], image_embeddings=emb, masks=masks, iou_predictions=iou, low_res_masks=low)
print(ort.__version__)
"""


@pytest.mark.parametrize("pair", ["tiny_sam_pair_dir", "external_data_sam_pair_dir"])
def test_pair_runs_in_onnxruntime_1_16(old_runtime_python, pair, request, tmp_path):
    """Also laid out as ViT-H is: the encoder's weights in encoder.onnx.data."""
    model_dir = request.getfixturevalue(pair)
    rng = np.random.default_rng(0)
    inputs = {"input_image": (rng.random((683, 1024, 3)) * 255).astype(np.float32),
              "point_coords": np.array([[[300.0, 200.0], [0.0, 0.0]]], np.float32),
              "point_labels": np.array([[1.0, -1.0]], np.float32),
              "mask_input": np.zeros((1, 1, 256, 256), np.float32),
              "has_mask_input": np.zeros(1, np.float32),
              "orig_im_size": np.array([480.0, 720.0], np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    version = run_script(old_runtime_python, OLD_RUNTIME_SCRIPT,
                         [model_dir, tmp_path / "in.npz", tmp_path / "out.npz"]).strip()
    assert version.startswith("1.16."), version
    with np.load(tmp_path / "out.npz") as old:
        old = dict(old)
    sessions = [ort.InferenceSession(str(model_dir / s.filename),
                                     providers=["CPUExecutionProvider"])
                for s in (SAM_ENCODER, SAM_DECODER)]
    (emb,) = sessions[0].run(None, {"input_image": inputs["input_image"]})
    new = dict(zip(SAM_DECODER.output_names, sessions[1].run(None, {
        "image_embeddings": emb, **{k: v for k, v in inputs.items() if k != "input_image"}})))
    assert old["masks"].shape == (1, 4, 480, 720)
    assert np.abs(old["image_embeddings"] - emb).max() <= 1e-4
    for name, value in new.items():
        assert np.abs(old[name] - value).max() <= 1e-4, name


@pytest.fixture(scope="session")
def samexporter_dir(request) -> Path:
    target = request.config.cache.mkdir("samexporter-0.5")
    if not (target / "samexporter" / "sam_onnx.py").is_file():
        pip(["install", "--no-deps", "--target", str(target), SAMEXPORTER])
    return target


SAMEXPORTER_SCRIPT = """
import sys, cv2, numpy as np
from samexporter.sam_onnx import SegmentAnythingONNX
model_dir, image_path, out = sys.argv[1:4]
model = SegmentAnythingONNX(model_dir + "/sam_encoder.onnx", model_dir + "/sam_decoder.onnx",
                            providers=["CPUExecutionProvider"])
embedding = model.encode(cv2.imread(image_path))
prompts = {
    "points": [{"type": "point", "data": [170, 125], "label": 1},
               {"type": "point", "data": [60, 55], "label": 0}],
    "box": [{"type": "rectangle", "data": [40, 30, 230, 200]}],
}
np.savez(out, embedding=embedding["image_embedding"],
         **{name: model.predict_masks(embedding, p) for name, p in prompts.items()})
"""


def test_samexporter_client_gives_our_masks(samexporter_dir, tiny_sam_pair_dir, tmp_path):
    """samexporter resizes with PIL as segment-anything does (our SamPredictor too), always
    appends the padding point, and post-processes `low_res_masks` itself with OpenCV."""
    import cv2

    from focsam_onnx.engine.predictor import SamPredictor

    image = Path(__file__).resolve().parents[2] / "examples" / "shapes.png"
    run_script(sys.executable, SAMEXPORTER_SCRIPT, [tiny_sam_pair_dir, image, tmp_path / "o.npz"],
               env={"PYTHONPATH": str(samexporter_dir)})
    with np.load(tmp_path / "o.npz") as theirs:
        theirs = dict(theirs)
    predictor = SamPredictor(tiny_sam_pair_dir, threads=2)
    predictor.set_image(cv2.imread(str(image)), image_format="BGR")
    assert np.abs(predictor.get_image_embedding() - theirs["embedding"]).max() <= 1e-5
    ours = {"points": predictor.predict(np.array([[170, 125], [60, 55]]), np.array([1, 0]),
                                        return_logits=True)[0][0]}
    # samexporter sends the box's corners and a padding point: the same list to our decoder.
    decoder = ort.InferenceSession(str(tiny_sam_pair_dir / SAM_DECODER.filename),
                                   providers=["CPUExecutionProvider"])
    scale = np.array([1024 / 320, 768 / 240])
    ours["box"] = decoder.run(None, dict(zip(SAM_DECODER.input_names, (
        predictor.get_image_embedding(),
        (np.array([[[40, 30], [230, 200], [0, 0]]]) * scale).astype(np.float32),
        np.array([[2, 3, -1]], np.float32), np.zeros((1, 1, 256, 256), np.float32),
        np.zeros(1, np.float32), np.array([240, 320], np.float32)))))[0][0, 0]
    for name, logits in ours.items():
        client = theirs[name][0, 0]
        assert client.shape == logits.shape == (240, 320)
        assert np.abs(client - logits).max() <= 1e-3 * max(1.0, np.abs(logits).max()), name
        confident = np.abs(logits) > 1e-2
        np.testing.assert_array_equal(client[confident] > 0, logits[confident] > 0)
