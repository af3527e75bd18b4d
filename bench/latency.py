"""CPU latency benchmark: where every millisecond of a FocSAM interaction goes, and the baselines.

Run `python bench/latency.py` (or `focsam-onnx bench`). It measures, after warm-up runs, the
median and p90 wall time and the peak resident memory of: preprocessing and the encoder graph
(once per image); the decoder graph per click (1, 5, 20 clicks, mask input on); the refiner graph
once per object (1, 4, 9, 16 selected windows); a 20-click session through the engine (per-click
interaction latency, the cold image open and a reopen from the disk cache); and, in the same run,
the official segment-anything ONNX decoder, our torch modules in eager mode and a SimpleClick
ViT-H cost proxy (see `simpleclick_proxy.py`).

Each group of stages (`stages.py`) runs in its own fresh process, which loads only the graph it
needs, so one big model is in memory at a time and "peak MB" is that process's peak resident
memory while the stage ran (model, runtime and interpreter included; reset per stage via VmHWM
where Linux allows, see `system_info.py`). Random-init exports are cached in `--cache-dir`
(`exports.py`). This module is the command line and the run's plan (`STAGE_GROUPS`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from focsam_onnx.bench import click_precision, exports, stages, system_info
from focsam_onnx.bench.cases import SCENE_HW
from focsam_onnx.bench.isolated import in_subprocess
from focsam_onnx.bench.report import NOTES, PAPER, compute_ratios, evaluate_targets, markdown_report
from focsam_onnx.bench.stages import Settings
from focsam_onnx.config import VARIANT_NAMES
from focsam_onnx.engine.threads import resolve_threads

log = logging.getLogger(__name__)

QUICK_PROXY_DEPTH = 1  # a 1-block ViT-H keeps --quick short; reported as a reduced proxy


@dataclass(frozen=True)
class Baselines:
    """Paths of the baseline graphs, exported (cached) before the stages run."""

    sam_decoder: str  # 4 masks at orig_im_size 1024x1024 (segment-anything's default export)
    sam_single_mask: str  # return_single_mask=True at orig_im_size SCENE_HW
    reference: str  # folder of our decoder and refiner as written in models/, not rewritten
    proxy: str
    proxy_depth: int


@dataclass(frozen=True)
class StageGroup:
    """One process's worth of stages: `run(settings, *extra(baselines))` -> {stage: entry},
    filed under `section` ("stages": our pipeline, or "baselines")."""

    name: str
    run: Callable[..., dict]  # module-level, so a spawned process can unpickle it
    section: str
    extra: Callable[[Baselines], tuple] = lambda b: ()


# In the order they run; a new group (another graph, precision or server) is one more row.
STAGE_GROUPS = (
    StageGroup("encoder + preprocess", stages.encoder_stages, "stages"),
    StageGroup("encoder precisions", stages.encoder_precision_stages, "stages"),
    StageGroup("decoder", stages.decoder_stages, "stages"),
    StageGroup("refiner", stages.refiner_stages, "stages"),
    StageGroup("20-click session", stages.session_stages, "stages"),
    StageGroup("stateless click vs session click", stages.stateless_stages, "stages"),
    StageGroup("refine click vs the unrewritten graphs", stages.refine_click_stages, "stages",
               lambda b: (b.reference,)),
    StageGroup("decoder to the image vs segment-anything's single-mask decoder",
               stages.decoder_to_image_stages, "stages", lambda b: (b.sam_single_mask,)),
    StageGroup("click precisions (fp32 vs bf16 decoder and refiner)",
               click_precision.click_precision_stages, "stages",
               lambda b: (b.reference, b.sam_single_mask, b.proxy)),
    StageGroup("segment-anything ONNX decoder", stages.sam_decoder_stages, "baselines",
               lambda b: (b.sam_decoder,)),
    StageGroup("torch eager", stages.torch_stages, "baselines"),
    StageGroup("SimpleClick ViT-H proxy", stages.proxy_stages, "baselines",
               lambda b: (b.proxy, b.proxy_depth)),
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "focsam-onnx" / "bench"


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--variant", choices=VARIANT_NAMES, default=None,
                        help="random-init variant, exported into --cache-dir on first use "
                             "(default vit_h; tiny with --quick)")
    source.add_argument("--model", type=Path, help="an exported model directory instead")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime / torch intra-op threads (default: all usable "
                             "cores; more are capped to them)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 10; 3 "
                        "with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="discarded runs first "
                        "(default 2; 1 with --quick)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny variant, few "
                        f"repeats, SimpleClick proxy reduced to depth {QUICK_PROXY_DEPTH}")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help="where random-init exports and baseline graphs are kept "
                             f"(default: {default_cache_dir()})")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed (default: 0)")
    args = parser.parse_args(argv)
    try:
        args.threads = resolve_threads(args.threads)
    except ValueError as err:
        parser.error(str(err))
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def _resolve_model(args: argparse.Namespace, variant: str) -> tuple[Path, str]:
    """(model directory, variant) from --model, or the cached random-init export."""
    if args.model is None:
        return exports.focsam_model_dir(args.cache_dir, variant, args.seed), variant
    from focsam_onnx.engine.loaded_model import read_manifest

    manifest = read_manifest(args.model)
    if "refiner" not in manifest.graphs:
        raise ValueError(f"{args.model} is a plain-SAM export without a refiner graph; the "
                         "benchmark needs a FocSAM export")
    return args.model, manifest.variant


def _baselines(args: argparse.Namespace, variant: str, seed: int) -> Baselines:
    depth = QUICK_PROXY_DEPTH if args.quick else 32
    cache = args.cache_dir
    log.info("preparing baseline graphs in %s", cache)
    sam_decoder = in_subprocess(exports.export_sam_decoder, str(cache / "sam_onnx_decoder"), seed)
    height, width = SCENE_HW
    sam_single = in_subprocess(exports.export_sam_decoder,
                               str(cache / f"sam_onnx_decoder_single-{height}x{width}"), seed,
                               SCENE_HW, True)
    reference = exports.reference_graphs(cache, variant, seed)
    proxy = in_subprocess(exports.export_simpleclick_proxy,
                          str(cache / f"simpleclick_proxy-depth{depth}"), depth, seed)
    return Baselines(sam_decoder, sam_single, str(reference), proxy, depth)


def run_benchmark(args: argparse.Namespace) -> dict:
    variant = args.variant or ("tiny" if args.quick else "vit_h")
    model_dir, variant = _resolve_model(args, variant)
    s = Settings(str(model_dir), variant, args.threads,
                 args.warmup if args.warmup is not None else (1 if args.quick else 2),
                 args.repeats if args.repeats is not None else (3 if args.quick else 10),
                 args.seed)
    baselines = _baselines(args, variant, s.seed)
    sections: dict[str, dict] = {"stages": {}, "baselines": {}}
    for group in STAGE_GROUPS:
        start = time.perf_counter()
        sections[group.section].update(in_subprocess(group.run, s, *group.extra(baselines)))
        log.info("measured %s (%.0f s)", group.name, time.perf_counter() - start)
    ratios = compute_ratios(sections["stages"], sections["baselines"])
    return {
        "date": system_info.now_iso(),
        "machine": system_info.machine_info(s.threads),
        "versions": system_info.library_versions(),
        "settings": {**asdict(replace(s, model_dir=str(model_dir))), "quick": args.quick,
                     "random_init": args.model is None, "scene_hw": list(SCENE_HW),
                     "peak_method": system_info.peak_method()},
        **sections,
        "ratios": ratios,
        "targets": evaluate_targets(sections["stages"], ratios),
        "paper": PAPER,
        "notes": list(NOTES),
    }


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the benchmark, print the tables, write --json.

    `prog` names the command in --help and usage lines (the CLI passes "focsam-onnx bench").
    """
    args = parse_args(argv, prog)
    if not logging.getLogger().handlers:  # the CLI configures logging itself
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        report = run_benchmark(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
