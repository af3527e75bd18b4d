"""Atomic writes: a folder swapped in only when its block succeeds; output places checked."""

from __future__ import annotations

import os
import signal
import time

import pytest

from focsam_onnx.engine.atomic_io import check_writable, staged_folder


def test_a_staged_folder_replaces_the_target_only_on_success(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(target) as staging:
            (staging / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with staged_folder(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_ctrl_c_that_a_library_swallowed_still_keeps_the_target(tmp_path):
    """A library that catches the KeyboardInterrupt (torch's ONNX exporter turns one into its own
    error) cannot hide the Ctrl-C: the staged folder still counts it and keeps the target."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    # Python's own Ctrl-C handler, as the CLI has (an earlier test may leave SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with staged_folder(target) as staging:
                (staging / "new.txt").write_text("new")
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)  # the handler runs here
                except KeyboardInterrupt:
                    pass  # the library's doing
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)  # whatever the asserts find
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_a_staged_folder_may_be_new(tmp_path):
    with staged_folder(tmp_path / "a" / "b") as staging:
        (staging / "f").write_text("x")
    assert (tmp_path / "a" / "b" / "f").read_text() == "x"


def test_check_writable_names_the_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("")
    check_writable(tmp_path / "new" / "deeper" / "x.png", "--out")
    with pytest.raises(ValueError, match=r"--out .*: .*file is a file, not a folder"):
        check_writable(tmp_path / "file" / "x.png", "--out")
