"""`serve --weights`: from a checkpoint's URL to labelling in one command, the export made once
into the cache and reused. The checkpoint (random tiny weights in the official FocSAM container)
comes from an HTTP server on 127.0.0.1 started here."""

from __future__ import annotations

import functools
import hashlib
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app

pytest.importorskip("fastapi")


class CountingHandler(SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def checkpoint_url(tmp_path):
    """(URL, sha256, server) of a random-init tiny FocSAM checkpoint in the official container."""
    import torch

    from focsam_onnx.config import get_variant
    from focsam_onnx.models.focsam import build_model

    site = tmp_path / "site"
    site.mkdir()
    model = build_model(get_variant("tiny"), seed=3)
    torch.save({"meta": {"note": "random weights"}, "state_dict": model.state_dict()},
               site / "tiny_random.pth")
    digest = hashlib.sha256((site / "tiny_random.pth").read_bytes()).hexdigest()
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(CountingHandler, directory=str(site)))
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tiny_random.pth", digest, server
    server.shutdown()
    server.server_close()


def test_serve_fetches_exports_once_and_reuses(checkpoint_url, serve_process, images_dir,
                                               tmp_path, monkeypatch):
    url, digest, site = checkpoint_url
    cache = tmp_path / "cache"
    monkeypatch.setenv("FOCSAM_ONNX_CACHE", str(cache))  # the server subprocess inherits it
    server = serve_process(tmp_path / "unused", images_dir, tmp_path / "labels",
                           tmp_path / "server.log")
    at = server.argv.index("--model")
    server.argv[at:at + 2] = ["--weights", url, "--sha256", digest]
    server.start()
    export = cache / "models" / f"tiny_random-{digest[:12]}"
    assert (export / "manifest.json").is_file()
    assert (cache / "checkpoints" / "tiny_random.pth").is_file()
    with urllib.request.urlopen(server.url + "api/images") as response:
        assert response.status == 200
    assert "exporting" in server.log.read_text() and len(site.requests) == 1
    server.kill()

    server.start()  # the second run: neither a download nor an export
    assert len(site.requests) == 1
    assert "the export made on first use" in server.log.read_text()


runner = CliRunner()


@pytest.mark.parametrize("argv, message", [
    (["--model", "m", "--weights", "sam_vit_b"], "give --model DIR"),  # neither: the demo model
    (["--sha256", "0" * 64], "--sha256 goes with --weights"),
    (["--weights", "http://127.0.0.1:1/x.pth"], "needs --sha256"),
    (["--weights", "focsam_vit_h"], "cannot be fetched automatically"),
    (["--model", "m", "--sha256", "0" * 64], "--sha256 goes with --weights"),
])
def test_model_or_weights_is_one_clear_line(argv, message, tmp_path):
    result = runner.invoke(app, ["serve", "--out", str(tmp_path / "labels"), *argv])
    assert result.exit_code == 2 and message in result.output, result.output
