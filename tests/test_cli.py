"""The command line as a newcomer uses it: the README's commands, and clear errors."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app, parse_clicks
from focsam_onnx.engine.loaded_model import read_manifest
from focsam_onnx.engine.prompts import Click

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def readme_commands(section: str) -> list[list[str]]:
    """The `focsam-onnx` commands of a README section's first code block, as argv lists."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert all(c[0] == ".venv/bin/focsam-onnx" for c in commands), commands
    return [c[1:] for c in commands]


def test_readme_first_screen_is_make_demo_and_make_test_and_ci_runs_the_second():
    text = (REPO / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert first == ["make demo", "make test"]
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("\nmake test")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_sets_up_with_the_readme_install_command_then_its_test_command():
    """`make test` where .venv is missing runs exactly the README's two set-up lines."""
    text = (REPO / "README.md").read_text().split("## Set up by hand\n", 1)[1]
    setup = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    # --no-print-directory: under `make test` (CI) this make is nested and would say so.
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-B", "test", "VENV=.venv"],
                         cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert dry.splitlines() == setup


def test_readme_main_job_runs(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    outputs = []
    for argv in readme_commands("Segment an image"):
        done = subprocess.run([sys.executable, "-m", "focsam_onnx.cli", *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert re.search(r"refiner\s+│\s+refiner\.onnx", outputs[0])
    mask = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED)
    image = cv2.imread(str(tmp_path / "examples" / "shapes.png"))
    assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
    overlay = cv2.imread(str(tmp_path / "overlay.png"))
    assert overlay.shape == image.shape and not np.array_equal(overlay, image)
    rows = re.findall(r"│\s+(\d)\s+│\s+click \d+,\d+,([+-])\s+│\s+(\w+)", outputs[1])
    assert rows == [("1", "+", "no"), ("2", "-", "ran")]


def test_readme_serve_command_parses():
    (argv,) = readme_commands("Label in the browser")
    result = runner.invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    options = [a for a in argv if a.startswith("--")]
    assert options and all(o in result.output for o in options)


def test_readme_one_command_serve_names_a_fetchable_checkpoint():
    from focsam_onnx.weights.catalog import find

    text = (REPO / "README.md").read_text().split("## Label in the browser\n", 1)[1]
    (line,) = [ln for ln in text.splitlines() if " serve --weights " in ln]
    argv = shlex.split(line)[1:]
    assert find(argv[argv.index("--weights") + 1]).url is not None
    result = runner.invoke(app, [*argv, "--help"])
    assert result.exit_code == 0 and all(
        o in result.output for o in argv if o.startswith("--")), result.output


def test_readme_team_commands_parse():
    commands = readme_commands("Serving a team")
    assert len(commands) == 2
    for argv in commands:
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0, result.output
        options = [a for a in argv if a.startswith("--")]
        assert options and all(o in result.output for o in options)


def test_readme_precision_commands_run(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    outputs = []
    for argv in readme_commands("Encoder precision (opt-in bf16 or int8)"):
        done = subprocess.run([sys.executable, "-m", "focsam_onnx.cli", *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert re.findall(r"quality gate passed: (\w+):", outputs[0]) == ["bf16", "int8"]
    manifest = json.loads((tmp_path / "exported" / "tiny" / "manifest.json").read_text())
    assert list(manifest["encoder_precisions"]) == ["fp32", "bf16", "int8"]
    assert "bf16 embeddings encoder" in outputs[1]


def test_readme_first_run_fetches_exports_and_segments_one_model():
    from focsam_onnx.weights.catalog import CATALOG, find

    fetch, export, segment = readme_commands("Get the weights")
    assert fetch[:2] == ["weights", "fetch"] and find(fetch[2]).url is not None
    assert export[export.index("--ckpt") + 1] == f"checkpoints/{find(fetch[2]).filename}"
    assert segment[segment.index("--model") + 1] == export[export.index("--out") + 1]
    listed = runner.invoke(app, ["weights", "list"])  # the one the README names that is free
    assert listed.exit_code == 0, listed.output
    for entry in CATALOG:
        where = (f"inside the package (weights/{entry.filename}" if entry.packaged
                 else entry.sha256 or entry.by_hand)
        assert entry.name in listed.output and where in listed.output


@pytest.mark.parametrize("text, message", [
    ("10,20", "click 1 '10,20' is not X,Y,LABEL"),
    ("10,20,+;5,x,-", "click 2 '5,x,-' is not X,Y,LABEL"),
    ("10,20,*", "is not X,Y,LABEL"),
    (" ; ", "no clicks"),
])
def test_malformed_clicks(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_clicks(text)


def test_click_labels_and_order():
    assert parse_clicks("3,4,+; 5,6,-;7,8,1;9,10,0") == [
        Click(3, 4, True), Click(5, 6, False), Click(7, 8, True), Click(9, 10, False)]


def test_segment_reports_malformed_clicks(tmp_path):
    result = runner.invoke(app, ["segment", str(REPO / "examples" / "shapes.png"), "--model",
                                 str(tmp_path), "--clicks", "1;2"])
    assert result.exit_code == 2 and "is not X,Y,LABEL" in result.output


def test_segment_reports_a_truncated_image(tmp_path):
    data = (REPO / "examples" / "shapes.png").read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["segment", str(broken), "--model", str(tmp_path),
                                 "--clicks", "1,2,+"])
    assert result.exit_code == 2 and "broken.png" in result.output


def test_segment_reports_a_missing_model(tmp_path):
    result = runner.invoke(app, ["segment", str(REPO / "examples" / "shapes.png"), "--model",
                                 str(tmp_path), "--clicks", "1,2,+"])
    assert result.exit_code == 2 and "not an exported model directory" in result.output


def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    result = runner.invoke(app, ["export", "--ckpt", str(text), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "notes.pth" in result.output
    assert not (tmp_path / "o").exists()


def test_export_needs_exactly_one_source(tmp_path):
    result = runner.invoke(app, ["export", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of --ckpt" in result.output


def test_evaluate_command_writes_the_results(golden_model_dir, load_golden, tmp_path):
    data = load_golden("session_2")
    for folder, array in (("images", data["image_rgb"][..., ::-1]),
                          ("masks", data["gt_mask"] * 255)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / folder / "object.png"), array)
    result = runner.invoke(app, ["evaluate", "--model", str(golden_model_dir), "--dataset",
                                 "folder", "--data-root", str(tmp_path / "data"), "--out",
                                 str(tmp_path / "results"), "--seed", "456"])
    assert result.exit_code == 0, result.output
    assert "NoC@90" in result.output
    (sample,) = json.loads((tmp_path / "results" / "per_sample.json").read_text())
    assert sample["id"] == "object" and len(sample["ious"]) == 20
    y, x, _ = data["clicks_yx_label"][0]
    assert sample["clicks"][0] == {"x": int(x), "y": int(y), "positive": True}
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["samples"] == 1 and metrics["skipped"] == 0 and metrics["NoC@90"] == 20


def test_evaluate_command_rejects_an_unknown_dataset(tmp_path):
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path), "--dataset", "pascal",
                                 "--data-root", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "pascal" in result.output


def test_plain_sam_checkpoint_exports_and_segments_without_refiner(golden, tmp_path):
    import torch

    from focsam_onnx.models.checkpoint import focsam_to_official_key

    state = torch.load(golden / "tiny_focsam.pth", weights_only=True)["state_dict"]
    official = {focsam_to_official_key(k): v for k, v in state.items()
                if not k.startswith("refine_head.")}
    torch.save(official, tmp_path / "sam_tiny.pth")
    model = tmp_path / "sam"
    result = runner.invoke(app, ["export", "--ckpt", str(tmp_path / "sam_tiny.pth"), "--out",
                                 str(model), "--no-simplify"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(model)
    assert manifest.kind == "sam" and set(manifest.files) == {"encoder.onnx", "decoder.onnx"}
    image = str(REPO / "examples" / "shapes.png")
    result = runner.invoke(app, ["segment", image, "--model", str(model), "--clicks",
                                 "170,125,+;60,55,-", "--out", str(tmp_path / "mask.png")])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED).shape == (240, 320)
    result = runner.invoke(app, ["segment", image, "--model", str(model), "--clicks",
                                 "170,125,+", "--refine-at", "1"])
    assert result.exit_code == 2 and "has no refiner graph" in result.output


BLOCK_IMPORTS = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Missing())
from focsam_onnx.cli import app
app(ARGS)
"""


@pytest.mark.parametrize(("blocked", "args", "extra"), [
    (("torch", "onnx"), ["export", "--random-init", "tiny", "--out", "OUT"], "export"),
    (("fastapi", "uvicorn"), ["serve", "--model", "OUT", "--images", "OUT"], "serve"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, blocked, args, extra):
    args = [str(tmp_path / "x") if a == "OUT" else a for a in args]
    code = BLOCK_IMPORTS.replace("BLOCKED", repr(set(blocked))).replace("ARGS", repr(args))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'focsam-onnx[{extra}]'" in lines[0], lines


def test_verbose_is_accepted_after_the_command(tmp_path):
    result = runner.invoke(app, ["segment", str(REPO / "examples" / "shapes.png"), "--model",
                                 str(tmp_path), "--clicks", "1,1,+", "-v"])
    assert result.exit_code == 2 and "No such option" not in result.output
    assert "Traceback" in result.output  # -v shows it


def test_verify_hashes_every_file_and_names_each_bad_one(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["verify", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert re.search(r"3 files, 0\.\d\d GB: all match their sha256", result.output)
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    decoder = model / "decoder.onnx"
    raw = bytearray(decoder.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    decoder.write_bytes(bytes(raw))
    (model / "refiner.onnx").unlink()
    done = subprocess.run([sys.executable, "-m", "focsam_onnx.cli", "verify", str(model)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"damaged: {decoder} does not match its sha256 in the manifest (altered after export)",
        f"damaged: {model / 'refiner.onnx'} is missing",
        "error: 2 of 3 files do not match the manifest; re-export the model with "
        "`focsam-onnx export`"]
