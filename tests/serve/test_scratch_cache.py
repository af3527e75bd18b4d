"""serve's scratch cache: a killed server's folder is removed by the next server, a running
one's is kept."""

from __future__ import annotations

import os
import subprocess
import sys

from focsam_onnx.serve.scratch_cache import PREFIX, make_scratch_cache


def test_a_dead_servers_scratch_cache_is_swept_a_running_ones_kept(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / f"{PREFIX}{int(gone.stdout)}-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "x.npy").write_bytes(b"0" * 10)
    running = tmp_path / f"{PREFIX}{os.getppid()}-def"
    running.mkdir()
    unrelated = tmp_path / f"{PREFIX}notapid"
    unrelated.mkdir()

    mine = make_scratch_cache(tmp_path)

    assert mine.is_dir() and mine.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert not dead.exists() and running.is_dir() and unrelated.is_dir()
