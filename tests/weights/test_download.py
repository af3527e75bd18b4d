"""Resumable, verified downloads against a real HTTP server on 127.0.0.1 started here."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app
from focsam_onnx.weights.download import DownloadError, fetch

PAYLOAD = bytes(range(256)) * 4099  # ~1 MB, not a multiple of the read size
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /ckpt.pth with Range support, and the faults its server asks for."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if srv.stall_after is not None and srv.stall_after < 0:
            srv.release.wait(30)  # no status line at all
            return
        if self.path != "/ckpt.pth":
            self.send_error(404)
            return
        start, requested = 0, self.headers.get("Range")
        if requested and srv.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.stall_after is not None:
            self.wfile.write(body[:srv.stall_after])
            self.wfile.flush()
            srv.release.wait(30)
        elif srv.cut_after is not None:
            self.wfile.write(body[:srv.cut_after])
            srv.cut_after = None  # once: the next request is served whole
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.ranges, srv.honour_range, srv.cut_after, srv.stall_after = [], True, None, None
    srv.release = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/ckpt.pth"
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def test_fetch_verifies_and_moves_into_place(server, tmp_path):
    seen = []
    path = fetch(server.url, SHA, tmp_path / "w" / "ckpt.pth",
                 on_progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pth"]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 1
    fetch(server.url, SHA, path)  # already there with this checksum: no request
    assert server.ranges == [None]


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    server.cut_after = 300_000
    dest = tmp_path / "ckpt.pth"
    with pytest.raises(DownloadError, match="after 300000 of 1049344 bytes.*run the same command"):
        fetch(server.url, SHA, dest)
    part = tmp_path / "ckpt.pth.part"
    assert part.stat().st_size == 300_000 and not dest.exists()
    fetch(server.url, SHA, dest)
    assert server.ranges == [None, "bytes=300000-"]
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_a_server_ignoring_range_restarts_the_file(server, tmp_path):
    (tmp_path / "ckpt.pth.part").write_bytes(b"x" * 1000)  # not even a prefix of the file
    server.honour_range = False
    fetch(server.url, SHA, tmp_path / "ckpt.pth")
    assert server.ranges == ["bytes=1000-"]
    assert (tmp_path / "ckpt.pth").read_bytes() == PAYLOAD


def test_a_complete_part_file_is_verified_without_refetching(server, tmp_path):
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD)
    fetch(server.url, SHA, tmp_path / "ckpt.pth")
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]  # answered 416: nothing left to send
    assert (tmp_path / "ckpt.pth").read_bytes() == PAYLOAD


def test_a_wrong_checksum_is_refused_and_the_partial_file_deleted(server, tmp_path):
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(DownloadError, match=f"sha256 {SHA}, expected {wrong}.*was deleted"):
        fetch(server.url, wrong, tmp_path / "ckpt.pth")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_an_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url.replace("ckpt", "nothing"), SHA, tmp_path / "w" / "ckpt.pth")
    assert list(tmp_path.iterdir()) == []  # not even the folder


@pytest.mark.parametrize("stall_after", [-1, 4096], ids=["before-headers", "mid-body"])
def test_a_stalled_server_times_out_and_keeps_the_partial_file(server, tmp_path, stall_after):
    server.stall_after = stall_after
    with pytest.raises(DownloadError, match=r"sent nothing for 0.5 s after \d+ bytes"):
        fetch(server.url, SHA, tmp_path / "ckpt.pth", timeout=0.5)
    part = tmp_path / "ckpt.pth.part"
    assert (part.stat().st_size if part.exists() else 0) == max(stall_after, 0)


def test_no_server_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago, so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1:.*check the network"):
        fetch(f"http://127.0.0.1:{port}/ckpt.pth", SHA, tmp_path / "ckpt.pth")


def test_an_existing_file_with_another_checksum_is_left_alone(server, tmp_path):
    dest = tmp_path / "ckpt.pth"
    dest.write_bytes(b"the user's own file")
    with pytest.raises(DownloadError, match="exists but its sha256"):
        fetch(server.url, SHA, dest)
    assert dest.read_bytes() == b"the user's own file" and server.ranges == []


def test_a_malformed_checksum_is_refused_before_any_request(server, tmp_path):
    with pytest.raises(DownloadError, match="not a sha256"):
        fetch(server.url, "abc123", tmp_path / "ckpt.pth")
    assert server.ranges == []


def test_the_fetch_command_downloads_a_custom_url(server, tmp_path):
    result = CliRunner().invoke(app, ["weights", "fetch", "--url", server.url, "--sha256", SHA,
                                      "--dest", str(tmp_path / "ckpts")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ckpts" / "ckpt.pth").read_bytes() == PAYLOAD
    assert "sha256 verified; next: focsam-onnx export --ckpt" in result.output


def test_a_failed_fetch_command_prints_one_line(server, tmp_path):
    done = subprocess.run([sys.executable, "-m", "focsam_onnx.cli", "weights", "fetch", "--url",
                           server.url.replace("ckpt", "gone"), "--sha256", SHA,
                           "--dest", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert re.fullmatch(r"error: \S+gone\.pth: HTTP 404 Not Found\n", done.stderr), done.stderr
    assert list(tmp_path.iterdir()) == []
