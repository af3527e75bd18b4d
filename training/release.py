"""Turn a training run into the shipped demo checkpoint: float16, official FocSAM container.

    python -m focsam_onnx.training.release --run runs/demo

The file is what upstream's runner saves, minus the optimizer: a dict with `meta` (plain
values: what the model is, how it was trained) and `state_dict` (upstream names, float16), so
`models/checkpoint.py` reads it with `torch.load(weights_only=True)` like any FocSAM file.
It is written where the package ships it (`weights/demo_tiny.pth`, or `--out`); prints the
file's size and sha256 for `weights/catalog.py`.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import OrderedDict
from pathlib import Path

import torch

from focsam_onnx.models.checkpoint import load_checkpoint
from focsam_onnx.weights.catalog import DEMO, find
from focsam_onnx.weights.packaged import packaged_path

NOTE = ("focsam-onnx demo model: the tiny FocSAM variant trained from scratch on procedurally "
        "generated shapes. Not FocSAM's quality; for first runs, tests and offline demos.")


def release(run: Path, out: Path, name: str = "final.pt") -> str:
    """Write `out` from `run/<name>` (a run's final.pt, or last.pt to try a run in progress);
    returns its sha256 after checking that it loads strictly as the tiny variant."""
    final = torch.load(run / name, map_location="cpu", weights_only=True)
    state = OrderedDict((k, v.to(torch.float16)) for k, v in final["model"].items())
    config = final["config"]
    meta = {"experiment_name": "focsam_onnx_demo_tiny", "seed": config["seed"],
            "iter": int(final.get("step", config["steps"])), "train_config": config,
            "train_seconds": round(float(final["elapsed_s"]), 1), "note": NOTE}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": state}, out)
    _, info = load_checkpoint(out)
    if info.config.variant != "tiny" or info.config.refiner is None:
        raise RuntimeError(f"{out} loads as {info.config.variant}, expected tiny with a refiner")
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training run folder")
    parser.add_argument("--out", type=Path, default=packaged_path(find(DEMO)),
                        help="checkpoint to write (default: the packaged demo model's file)")
    parser.add_argument("--from", dest="name", default="final.pt",
                        help="file of the run folder to release (last.pt: a run in progress)")
    args = parser.parse_args(argv)
    digest = release(args.run, args.out, args.name)
    size = args.out.stat().st_size
    print(f"{args.out}: {size:,} bytes, sha256 {digest}\nrecord them in weights/catalog.py:\n"
          f"DEMO_TINY_SIZE = {size:_}\nDEMO_TINY_SHA256 = \"{digest}\"")


if __name__ == "__main__":
    main()
