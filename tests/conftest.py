"""Shared fixtures: where the golden reference lives, and how to load its arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """`$FOCSAM_GOLDEN`, else `../shared/golden` beside the repository."""
    return Path(os.environ.get("FOCSAM_GOLDEN", REPO_ROOT.parent / "shared" / "golden"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reads the golden data carries the `golden` marker, whatever its file says:
    `-m "not golden"` then runs exactly the tests that need no ../shared."""
    for item in items:
        if "golden" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.golden)


@pytest.fixture(scope="session")
def golden() -> Path:
    path = golden_dir()
    if not (path / "tiny_focsam.pth").is_file():
        reason = (f"golden reference not found at {path}: put ../shared beside the checkout "
                  "or set FOCSAM_GOLDEN")
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI must never silently skip the exactness checks
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def load_golden(golden: Path):
    """`load_golden("decoder_3clicks")` -> dict of arrays from that .npz."""

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(golden / f"{name}.npz") as data:
            return {k: data[k] for k in data.files}

    return load


@pytest.fixture(scope="session")
def golden_model_dir(golden: Path, tmp_path_factory) -> Path:
    """The golden tiny checkpoint exported once per test session, as a user does it."""
    from typer.testing import CliRunner

    from focsam_onnx.cli import app

    out = tmp_path_factory.mktemp("golden_tiny_onnx")
    result = CliRunner().invoke(app, ["export", "--ckpt", str(golden / "tiny_focsam.pth"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init tiny FocSAM export (encoder, decoder, refiner), made once per test session.

    For every test that needs *a* model but not the golden numbers: it needs no ../shared.
    """
    from typer.testing import CliRunner

    from focsam_onnx.cli import app

    out = tmp_path_factory.mktemp("random_tiny_onnx")
    result = CliRunner().invoke(app, ["export", "--random-init", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """The packaged demo model (weights/demo_tiny.pth), exported once per test session: for the
    tests that need real masks. Skips while the build holds no demo checkpoint."""
    from focsam_onnx.errors import Unavailable
    from focsam_onnx.export.model_cache import export_once
    from focsam_onnx.weights.catalog import DEMO, find
    from focsam_onnx.weights.packaged import packaged_checkpoint

    try:
        checkpoint = packaged_checkpoint(find(DEMO))
    except Unavailable as err:
        pytest.skip(str(err))
    out = tmp_path_factory.mktemp("demo_tiny_onnx") / "model"
    export_once(checkpoint, out)
    return out


@pytest.fixture(scope="session")
def demo_engine(demo_model_dir):
    """The engine on the packaged demo model."""
    from focsam_onnx.engine.focsam_engine import FocSAMEngine

    return FocSAMEngine.open(demo_model_dir, threads=2)


@pytest.fixture(scope="session")
def sam_vit_b_export(tmp_path_factory):
    """(segment-anything's own random-weight vit_b `Sam`, our export of it with the
    SAM-compatible pair at opset 17): one ViT-B export shared by the interop tests."""
    import torch

    from focsam_onnx.engine.manifest import Source
    from focsam_onnx.export.exporter import export_model
    from focsam_onnx.models.checkpoint import load_checkpoint
    from focsam_onnx.models.segment_anything_compat import import_segment_anything

    out = tmp_path_factory.mktemp("sam_vit_b_pair")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        sam = import_segment_anything().sam_model_registry["vit_b"]().eval()
        with torch.no_grad():  # make zero-initialised tensors (LN biases, ...) matter too
            for p in sam.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    torch.save(sam.state_dict(), out / "sam_vit_b.pth")
    model, info = load_checkpoint(out / "sam_vit_b.pth")
    export_model(model, out / "onnx", Source(info.kind, path=str(out / "sam_vit_b.pth")),
                 opset=17, simplify=False, sam_compatible=True)
    return sam, out / "onnx"


@pytest.fixture(scope="session")
def tiny_sam_pair_dir(tmp_path_factory) -> Path:
    """A random-init tiny FocSAM export with the SAM-compatible pair at opset 17 (the CLI way)."""
    from typer.testing import CliRunner

    from focsam_onnx.cli import app

    out = tmp_path_factory.mktemp("random_tiny_sam_pair")
    result = CliRunner().invoke(app, ["export", "--random-init", "tiny", "--out", str(out),
                                      "--opset", "17", "--sam-compatible", "--no-simplify"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def external_data_sam_pair_dir(tmp_path_factory) -> Path:
    """A random-init tiny plain-SAM export (opset 17, SAM-compatible pair) laid out as ViT-H's
    is: every graph's weights in a `.data` file beside it (the 2 GB threshold lowered to 0)."""
    from focsam_onnx.config import get_variant
    from focsam_onnx.engine.manifest import Source
    from focsam_onnx.export.exporter import export_model
    from focsam_onnx.models.focsam import build_model

    out = tmp_path_factory.mktemp("external_data_sam_pair") / "onnx"
    model = build_model(get_variant("tiny").as_plain_sam(), seed=0)
    export_model(model, out, Source("random-init", variant="tiny", seed=0), opset=17,
                 simplify=False, sam_compatible=True, external_data_from=0)
    return out


# Ray (the `ray` extra), shared by tests/cluster and tests/serve.


def _require_ray() -> None:
    """Skips without the `ray` extra; fails under CI, which installs it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: CI installs the `ray` extra")
        pytest.skip("ray is not installed: pip install 'focsam-onnx[ray]'")


@pytest.fixture()
def ray_installed() -> None:
    _require_ray()


@pytest.fixture(scope="module")
def ray_local():
    """One small local Ray instance (2 CPUs, on 127.0.0.1) for the module, always stopped."""
    _require_ray()
    from focsam_onnx.cluster.ray_encoder import connect

    with connect("local", num_cpus=2, object_store_bytes=80 << 20) as ray:
        yield ray


@pytest.fixture()
def six_images(tmp_path) -> Path:
    """Six different images (one JPEG) of different sizes."""
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i in range(6):
        image = rng.integers(0, 256, (40 + 6 * i, 56, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"img{i}.{'jpg' if i == 3 else 'png'}"), image)
    return folder


def _cache_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="session")
def cache_bytes():
    """`cache_bytes(folder)` -> {file name: bytes} of an embedding cache folder."""
    return _cache_bytes


@pytest.fixture()
def single_process_cache(tiny_model_dir, tmp_path):
    """`single_process_cache(images)` -> the bytes a single-process `embed` of the folder
    writes (the reference the Ray paths must equal)."""
    from typer.testing import CliRunner

    from focsam_onnx.cli import app

    def embed(images: Path) -> dict[str, bytes]:
        cache = tmp_path / "single_process_cache"
        result = CliRunner().invoke(app, ["embed", str(images), "--model", str(tiny_model_dir),
                                          "--cache-dir", str(cache), "--threads", "1"])
        assert result.exit_code == 0, result.output
        return _cache_bytes(cache)

    return embed


@pytest.fixture(scope="session")
def counting_cache():
    """A real disk `EmbeddingCache` class that lists its writes (`.writes`)."""
    from focsam_onnx.engine.cache import EmbeddingCache

    class CountingCache(EmbeddingCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.writes: list[str] = []

        def put(self, image_hash, model_id, precision, embeddings):
            self.writes.append(image_hash)
            return super().put(image_hash, model_id, precision, embeddings)

    return CountingCache
