"""Is a model folder's file the one the export wrote: its size, its stamp, its sha256.

The export records each file's size, sha256 and stamp in the manifest. Opening a model checks
only the files that open loads, by size and stamp; the full sha256 check of every file runs at
export and in `focsam-onnx verify`.

The stamp is a sha256 over the size and samples of the content: the first and the last MiB and
16 blocks of 64 KiB spread evenly between them (a file of 3 MiB or less is hashed whole). It
reads at most 3 MiB per file, where the sha256 of ViT-H's weights reads 2.5 GB. It catches what
happens to a model folder in practice: a re-export (new weights differ at the start of a weight
file and all through it; a graph file's header names its producer and its tensors), a truncated
or extended copy (the size), a file replaced by another graph or by the file of another export
(the samples). It does not catch a change of the same size between the samples: bit rot, or an
edit made on purpose to pass it. That is what the full check of `focsam-onnx verify` is for.
Unlike a modification time, the stamp survives copying the folder (cp, rsync, a container layer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from focsam_onnx.engine.manifest import Manifest
from focsam_onnx.engine.sessions import ModelDirError

MIB = 1 << 20
STAMP_EDGE = MIB  # the head and the tail hashed whole
STAMP_SAMPLES = 16  # blocks between them
STAMP_BLOCK = 64 << 10
HINT = "re-export the model with `focsam-onnx export`"


def file_sha256(path: Path, chunk: int = 1 << 22,
                on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's sha256; `on_bytes(n)` after each chunk of n bytes read (a progress bar)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return digest.hexdigest()


def stamp_blocks(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the parts of a `size`-byte file its stamp hashes, in file order."""
    if size <= 2 * STAMP_EDGE + STAMP_SAMPLES * STAMP_BLOCK:
        return [(0, size)]
    inner = size - 2 * STAMP_EDGE - STAMP_BLOCK
    samples = [(STAMP_EDGE + inner * (i + 1) // (STAMP_SAMPLES + 1), STAMP_BLOCK)
               for i in range(STAMP_SAMPLES)]
    return [(0, STAMP_EDGE), *samples, (size - STAMP_EDGE, STAMP_EDGE)]


def file_stamp(path: Path) -> str:
    """sha256 over the file's size and the blocks `stamp_blocks` names (at most 3 MiB read)."""
    size = Path(path).stat().st_size
    digest = hashlib.sha256(f"{size}\n".encode())
    with open(path, "rb") as f:
        for offset, length in stamp_blocks(size):
            f.seek(offset)
            digest.update(f.read(length))
    return digest.hexdigest()


def files_to_check(manifest: Manifest, graph_files: Iterable[str]) -> list[str]:
    """The manifest's files that loading `graph_files` reads: each with its external data.

    A format-2 manifest does not say which files a graph reads: all its files are checked.
    """
    if manifest.format_version < 3:
        return list(manifest.files)
    names: dict[str, None] = {}
    for name in graph_files:
        names[name] = None
        entry = manifest.files.get(name)
        names.update(dict.fromkeys(entry.external_data if entry else ()))
    return list(names)


def check_file(model_dir: Path, name: str, manifest: Manifest, full: bool = False,
               on_bytes: Callable[[int], None] | None = None) -> str | None:
    """Why file `name` of `model_dir` is not the one the export wrote, or None when it is.

    By size and stamp; by size and sha256 when `full` or the entry has no stamp (format 2).
    """
    entry = manifest.files.get(name)
    path = Path(model_dir) / name
    if entry is None:
        return f"{path} is not in the manifest"
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != entry.size:
        return f"{path} has {size} bytes, the manifest says {entry.size} (truncated or replaced)"
    if full or entry.stamp is None:
        if file_sha256(path, on_bytes=on_bytes) != entry.sha256:
            return f"{path} does not match its sha256 in the manifest (altered after export)"
    elif file_stamp(path) != entry.stamp:
        return f"{path} does not match its stamp in the manifest (altered or replaced after export)"
    return None


def verify_files(model_dir: Path, manifest: Manifest, names: Iterable[str]) -> None:
    """Check the files `names` (with their external data) by size and stamp; raise
    ModelDirError for the first that is not what the export wrote."""
    for name in files_to_check(manifest, names):
        problem = check_file(model_dir, name, manifest)
        if problem is not None:
            raise ModelDirError(f"{problem}; {HINT}")


def find_damaged(model_dir: Path, manifest: Manifest,
                 on_bytes: Callable[[int], None] | None = None) -> list[str]:
    """The full check: every file of the manifest by size and sha256; one line per bad file.

    `on_bytes(n)` is called as the files are read (their sizes add up to `manifest_bytes`).
    """
    problems = []
    for name, entry in manifest.files.items():
        read = 0

        def count(n: int) -> None:
            nonlocal read
            read += n
            if on_bytes is not None:
                on_bytes(n)

        problem = check_file(model_dir, name, manifest, full=True, on_bytes=count)
        if problem is not None:
            problems.append(problem)
            if on_bytes is not None and entry.size > read:
                on_bytes(entry.size - read)  # a missing or short file: the bar still ends full
    return problems


def manifest_bytes(manifest: Manifest) -> int:
    return sum(entry.size for entry in manifest.files.values())
