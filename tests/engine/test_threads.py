"""Thread counts: all usable cores by default, never more, never fewer than one."""

from __future__ import annotations

import logging
import os

import pytest

from focsam_onnx.engine.threads import resolve_threads, usable_cores


def test_the_default_is_the_affinity_mask():
    assert resolve_threads(None) == usable_cores() == len(os.sched_getaffinity(0))


def test_too_many_threads_are_capped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_threads(1000) == usable_cores()
    assert "1000 threads requested" in caplog.text
    assert resolve_threads(1) == 1


@pytest.mark.parametrize("threads", [0, -3])
def test_fewer_than_one_thread_is_refused(threads):
    with pytest.raises(ValueError, match=f"threads must be >= 1.*got {threads}"):
        resolve_threads(threads)
