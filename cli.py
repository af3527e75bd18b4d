"""The `focsam-onnx` command line: glue only; each command calls one library function."""

from __future__ import annotations

import functools
import logging
import re
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from focsam_onnx import __version__
from focsam_onnx.config import VARIANT_NAMES
from focsam_onnx.errors import FocSAMError, InvalidInput, require

if TYPE_CHECKING:
    from focsam_onnx.engine.prompts import Box, Click, Prompt
    from focsam_onnx.weights.catalog import Checkpoint

VERBOSE_FLAGS = ("-v", "--verbose")


class VerboseAnywhere(TyperGroup):
    """Accepts -v / --verbose anywhere on the line (`focsam-onnx export ... -v`), as every error
    line suggests it, by moving it before the command (not past a `--`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        cut = args.index("--") if "--" in args else len(args)
        head = args[:cut]
        flags = [a for a in head if a in VERBOSE_FLAGS]
        return super().parse_args(ctx, flags + [a for a in head if a not in VERBOSE_FLAGS]
                                  + args[cut:])


app = typer.Typer(
    cls=VerboseAnywhere,
    help="FocSAM interactive segmentation on CPU: export ONNX graphs, segment, evaluate, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
WEIGHTS_HELP = ("Instead of --model: a checkpoint name from `weights list`, or a URL with "
                "--sha256, fetched (verified, resumable) and exported once into the cache "
                "($FOCSAM_ONNX_CACHE, default ~/.cache/focsam-onnx); later runs reuse it. "
                "Without --model and --weights: the packaged demo model (demo_tiny).")
MODEL_HELP = ("Folder written by `focsam-onnx export` (default: the packaged demo model where "
              "the build has one, exported into the cache on first use; not FocSAM's quality).")
errors = Console(stderr=True, soft_wrap=True)  # unwrapped, so messages stay greppable

_verbose = False  # set by the --verbose option
CLICK_RE = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*([+\-01])\s*$")
PROGRESS_MIN_CLICKS = 20  # longer click lists show a progress bar and an abridged table
Command = TypeVar("Command", bound=Callable)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"focsam-onnx {__version__}")
        raise typer.Exit()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v",
                                      help="Log debug messages; show tracebacks of errors."),
         version: bool = typer.Option(False, "--version", callback=_print_version,
                                      is_eager=True, help="Print the version and exit.")):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    global _verbose
    _verbose = verbose


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `message` as one `error:` line on stderr and exit with `code`."""
    errors.print(Text("error: ", style="bold red") + Text(message), highlight=False)
    raise typer.Exit(code=code)


def one_line_errors(command: Command) -> Command:
    """Turn any error of `command` into one line and an exit code (the traceback with -v):
    our errors carry their advice and their code, anything else is a bug (exit 1)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:
            if _verbose:
                traceback.print_exc()
            fail(*describe_error(err))

    return run  # type: ignore[return-value]


def describe_error(err: Exception) -> tuple[str, int]:
    """One line and an exit code for `err`: ours and the file system's say what to do; anything
    else is named as unexpected."""
    if isinstance(err, FocSAMError) and str(err):
        return str(err).splitlines()[0], err.exit_code
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}", 2
    return f"unexpected {type(err).__name__}: {err} (run with -v for the traceback)", 1


@app.command()
@one_line_errors
def export(
    out: Path = typer.Option(..., "--out", help="Folder to write the graphs and manifest.json."),
    ckpt: Path | None = typer.Option(
        None, "--ckpt", help="Checkpoint: official SAM .pth or FocSAM (mmengine) .pth; "
                             "the variant is detected from its tensor shapes."),
    random_init: str | None = typer.Option(
        None, "--random-init", help=f"Export random weights of a variant {VARIANT_NAMES}, "
                                    "for timing and testing without a checkpoint."),
    seed: int = typer.Option(0, help="Seed for --random-init."),
    opset: int = typer.Option(20, help="ONNX opset (20 has Gelu; the refiner needs >= 19)."),
    simplify: bool = typer.Option(True, help="Run onnxsim on graphs under 2 GB (re-checked)."),
    sam_compatible: bool = typer.Option(
        False, help="Also write sam_encoder.onnx + sam_decoder.onnx (segment-anything's ONNX "
                    "interface, for SAM tools and SamPredictor) and xanylabeling.yaml; "
                    "with --opset 17 they load in onnxruntime >= 1.16."),
    encoder_precision: list[str] = typer.Option(
        ["fp32"], "--encoder-precision",
        help="Encoder precisions to offer (repeat for several): fp32 (always), bf16 (OpenVINO, "
             "needs the [openvino] extra), int8 (writes encoder.int8.onnx). A reduced one is "
             "offered only if its quality gate against fp32 passes."),
    click_precision: str = typer.Option(
        "fp32", "--click-precision",
        help="Also offer the decoder and refiner at this precision: bf16 (OpenVINO, needs the "
             "[openvino] extra), only if its click-replay gate against fp32 passes (the "
             "figures go to manifest.json either way). fp32 is always offered."),
    force: bool = typer.Option(False, "--force", help="Replace the export already in --out "
                                                      "(kept until the new one passed parity)."),
):
    """Export encoder.onnx, decoder.onnx and refiner.onnx, each gated on ORT-vs-torch parity."""
    if (ckpt is None) == (random_init is None):
        fail("give exactly one of --ckpt PATH or --random-init VARIANT")
    if ckpt is not None and not ckpt.is_file():
        fail(f"checkpoint {ckpt} not found")
    for module in ("torch", "onnx", "onnxscript"):
        require(module, "focsam-onnx export", "export")
    from focsam_onnx.config import get_variant
    from focsam_onnx.engine.click_runtime import import_openvino
    from focsam_onnx.engine.graph_spec import get_click_precision
    from focsam_onnx.export.target import check_export_target

    get_click_precision(click_precision)
    if click_precision != "fp32":
        import_openvino()  # a missing extra fails before the export, not after it
    if random_init is not None:
        get_variant(random_init)  # a bad name fails before torch is imported
    check_export_target(out, force)  # before torch is imported, let alone a checkpoint loaded
    from focsam_onnx.engine.loaded_model import read_manifest
    from focsam_onnx.export.exporter import export_model
    from focsam_onnx.export.model_source import from_checkpoint, quiet_exporter_logs
    from focsam_onnx.export.model_source import random_init as random_init_model

    if not _verbose:
        quiet_exporter_logs()
    if ckpt is not None:
        with console.status(f"loading {ckpt}"):
            model, source = from_checkpoint(ckpt)
    else:
        model, source = random_init_model(random_init, seed)
    console.print(f"exporting {model.cfg.variant} "
                  f"({'plain SAM' if model.cfg.is_plain_sam else 'FocSAM'}) to {out}")
    with console.status("") as status:
        manifest, reports = export_model(
            model, out, source, opset=opset, simplify=simplify, sam_compatible=sam_compatible,
            on_graph=lambda name: status.update(f"exporting {name} graph and checking parity"))
    table = Table("graph", "files", "MB", "max |ORT - torch|", "seconds", "simplified")
    for r in reports:
        table.add_row(r.name, ", ".join(r.files), f"{r.bytes / 1e6:.1f}", f"{r.worst_parity:.2e}",
                      f"{r.seconds:.1f}", "yes" if r.simplified else "no")
    console.print(table)
    if any(p != "fp32" for p in encoder_precision):
        from focsam_onnx.export.encoder_precision import add_encoder_precisions

        with console.status("quality gate of the reduced-precision encoders"):
            gates = add_encoder_precisions(out, encoder_precision)
        for report in gates.values():
            console.print(f"quality gate passed: {report.summary()}")
        manifest = read_manifest(out)
    if click_precision != "fp32":
        from focsam_onnx.export.click_precision import add_click_precision

        with console.status(f"click-replay gate of the {click_precision} decoder and refiner"):
            gate = add_click_precision(out, click_precision)
        console.print(f"click-replay gate passed: {gate.summary()}")
    console.print(f"model id {manifest.model_id[:16]}, written to {out}")


@app.command()
@one_line_errors
def verify(model: Path = typer.Argument(..., help="Folder written by `focsam-onnx export`.")):
    """Check every file of an export against its sha256 in the manifest (opening a model checks
    only sizes and stamps of what it loads). Exit 0 when all match, 2 naming each bad file."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from focsam_onnx.engine.integrity import find_damaged, manifest_bytes
    from focsam_onnx.engine.loaded_model import read_manifest

    manifest = read_manifest(model)
    total = manifest_bytes(manifest)
    with Progress("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("hashing", total=total)
        problems = find_damaged(model, manifest, lambda n: progress.advance(task, n))
    for problem in problems:
        errors.print(Text("damaged: ", style="bold red") + Text(problem), highlight=False)
    if problems:
        fail(f"{len(problems)} of {len(manifest.files)} files do not match the manifest; "
             "re-export the model with `focsam-onnx export`")
    console.print(f"{len(manifest.files)} files, {total / 1e9:.2f} GB: all match their sha256 "
                  f"(model id {manifest.model_id[:16]})")


def parse_clicks(text: str) -> list[Click]:
    """"X,Y,+;X,Y,-" -> clicks in order; labels + / - or 1 / 0, original image pixels."""
    from focsam_onnx.engine.prompts import Click

    clicks = []
    for i, part in enumerate(p for p in text.split(";") if p.strip()):
        match = CLICK_RE.match(part)
        if match is None:
            raise InvalidInput(f"click {i + 1} {part.strip()!r} is not X,Y,LABEL "
                               "(e.g. '120,45,+'; label + or 1 positive, - or 0 negative)")
        x, y, label = match.groups()
        clicks.append(Click(int(x), int(y), label in "+1"))
    if not clicks:
        raise InvalidInput(f"no clicks in {text!r}; expected e.g. '120,45,+;200,80,-'")
    return clicks


def parse_box(text: str) -> Box:
    """"X0,Y0,X1,Y1" -> the box: top-left and bottom-right corner, original pixels."""
    from focsam_onnx.engine.prompts import Box

    parts = text.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        return Box(*(float(p) for p in parts))
    except ValueError:
        raise InvalidInput(f"box {text!r} is not X0,Y0,X1,Y1 (e.g. '40,30,220,180': top-left "
                           "and bottom-right corner in image pixels)") from None


def refine_at_option(value: int | None) -> int | None | str:
    """--refine-at: None (not given) -> upstream's step; -1 -> no refiner; else that step."""
    if value is None:
        return "upstream"
    if value < -1:
        raise InvalidInput(f"--refine-at must be a click index >= 0, or -1 for no refiner; "
                           f"got {value}")
    return None if value == -1 else value


@app.command()
@one_line_errors
def segment(
    image: Path = typer.Argument(..., help="Image file (any format OpenCV reads)."),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    sha256: str | None = typer.Option(None, "--sha256",
                                      help="Expected sha256 of a --weights URL."),
    clicks: str | None = typer.Option(
        None, "--clicks", help="'X,Y,+;X,Y,-;...' in original image pixels (x column, y row), "
                               "applied in order."),
    box: str | None = typer.Option(
        None, "--box", help="'X0,Y0,X1,Y1' box prompt in original image pixels; it comes "
                            "first, then the clicks are added to it one by one."),
    out: Path = typer.Option(Path("mask.png"), "--out",
                             help="Mask file (255 object, 0 rest), lossless: .png, .bmp, .tif."),
    overlay: Path | None = typer.Option(None, help="Also write the image with mask and clicks."),
    cache_dir: Path | None = typer.Option(
        None, help="Keep image embeddings here, so reopening the image skips the encoder."),
    threads: int | None = typer.Option(None, help="onnxruntime threads (default: all usable "
                                                  "cores; more are capped to them)."),
    encoder_precision: str = typer.Option(
        "fp32", help="fp32 (upstream-exact), or bf16 / int8 where the export offers it."),
    click_precision: str = typer.Option(
        "fp32", help="Decoder and refiner: fp32 (exact), or bf16 where the export offers it "
                     "(export --click-precision bf16)."),
    refine_at: int | None = typer.Option(
        None, help="Click index (0-based) where the focus refiner runs; -1 disables it (plain "
                   "SAM on the same graphs). Default: 1 (upstream), or -1 for plain-SAM exports."),
):
    """Segment one object of IMAGE from clicks and/or a box, and write its mask."""
    from rich.progress import Progress

    from focsam_onnx.engine.click_session import replay
    from focsam_onnx.engine.focsam_engine import FocSAMEngine
    from focsam_onnx.engine.image_io import check_image_output, load_image, save_image
    from focsam_onnx.engine.overlay import draw_overlay
    from focsam_onnx.engine.threads import resolve_threads

    # Everything that can be checked without the model is checked before it loads.
    if clicks is None and box is None:
        fail("give --clicks, --box or both")
    prompts = ([parse_box(box)] if box is not None else []) + (
        parse_clicks(clicks) if clicks is not None else [])
    threads = resolve_threads(threads)
    refine = refine_at_option(refine_at)
    check_image_output(out, "--out", lossless=True)
    if overlay is not None:
        check_image_output(overlay, "--overlay")
    bgr = load_image(image)
    for prompt in prompts:
        prompt.checked(bgr.shape[1], bgr.shape[0])
    model = model_option(model, weights, sha256)
    engine = FocSAMEngine.open(model, threads=threads, cache_dir=cache_dir,
                               encoder_precision=encoder_precision,
                               click_precision=click_precision)
    encoded = engine.open_image(bgr)
    results = []
    with Progress(console=console, transient=True,
                  disable=len(prompts) < PROGRESS_MIN_CLICKS) as progress:
        task = progress.add_task("clicks", total=len(prompts))

        def advance(prompt, result) -> None:
            results.append(result)
            progress.advance(task)

        session = replay(engine, encoded, prompts, refine, observer=advance)
    how = "from cache" if encoded.from_cache else "encoder"
    # Unwrapped: a long image path must not split the status (scripts grep "from cache").
    console.print(f"{image}: {bgr.shape[1]}x{bgr.shape[0]}, {encoder_precision} embeddings {how} "
                  f"in {encoded.seconds * 1000:.0f} ms", soft_wrap=True, highlight=False)
    console.print(prompt_table(prompts, results))
    mask = session.result.mask
    save_image(out, mask.astype("uint8") * 255)
    console.print(f"mask ({int(mask.sum())} pixels) written to {out}")
    if overlay is not None:
        save_image(overlay, draw_overlay(bgr, mask, session.clicks))
        console.print(f"overlay written to {overlay}")


def prompt_table(prompts: list[Prompt], results: list) -> Table:
    """One row per prompt; long lists keep their first and last rows (the rest elided)."""
    from focsam_onnx.engine.prompts import Box

    table = Table("step", "prompt", "refined", "pred. IoU", "ms")
    rows = list(enumerate(zip(prompts, results), 1))
    if len(rows) > PROGRESS_MIN_CLICKS:
        half = PROGRESS_MIN_CLICKS // 2
        rows = rows[:half] + [None] + rows[-half:]
    for row in rows:
        if row is None:
            table.add_row("…", "", "", "", "")
            continue
        i, (prompt, r) = row
        shown = (f"box {','.join(f'{v:g}' for v in prompt.corners)}" if isinstance(prompt, Box)
                 else f"click {prompt.x},{prompt.y},{'+' if prompt.positive else '-'}")
        refined = "ran" if r.refiner_ran else ("yes" if r.decoded_on_refined else "no")
        table.add_row(str(i), shown, refined, f"{r.iou_prediction:.3f}",
                      f"{r.timings_ms['total']:.1f}")
    return table


RAY_HELP = ("Encode on a Ray cluster: 'local' starts one on this machine, 'auto' joins the "
            "cluster this machine is part of (`ray start`), HOST:PORT joins that head node.")


@dataclass(frozen=True)
class RayOptions:
    """The Ray options shared by `embed` and `evaluate`; no address: this process encodes."""

    address: str | None
    workers: int | None
    worker_cpus: int
    worker_memory_gb: float | None


def _embed(paths: list[Path], model: Path, cache_dir: Path, threads: int | None,
           ray: RayOptions):
    """Encode `paths` into `cache_dir` (here or on Ray) under a progress bar; the report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from focsam_onnx.engine.cache import EmbeddingCache
    from focsam_onnx.engine.embed import embed_images, encoding_engine, local_encoder
    from focsam_onnx.engine.loaded_model import read_manifest

    cache = EmbeddingCache(cache_dir=cache_dir)
    columns = ("{task.description}", BarColumn(), "{task.completed}/{task.total}",
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TextColumn("{task.fields[eta]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("embedding", total=len(paths), rate="", eta="-")

        def show(report) -> None:
            rate = report.images_per_minute()
            eta = _clock((report.total - report.done) / rate * 60) if rate else "-"
            progress.update(task, description="embedding", completed=report.done,
                            rate=f"{rate:.1f} img/min", eta=eta)

        if ray.address is None:
            engine = encoding_engine(model, threads=threads)
            return embed_images(paths, cache, engine.model.model_id, local_encoder(engine), show)
        from focsam_onnx.cluster.ray_encoder import embed_on_ray

        progress.update(task, description=f"starting Ray workers ({ray.address})")
        model_id = read_manifest(model).model_id
        memory = int(ray.worker_memory_gb * 2**30) if ray.worker_memory_gb else None
        return embed_on_ray(paths, cache, model, model_id, ray.address, ray.workers,
                            ray.worker_cpus, memory, show)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _print_embed_report(report) -> None:
    for path, reason in report.failures:
        where = "" if str(path) in reason else f"{path}: "  # image errors name their file
        errors.print(Text("failed: ", style="bold red") + Text(where + reason), highlight=False)
    console.print(f"{report.encoded} encoded, {report.cached} already cached, "
                  f"{len(report.failures)} failed, of {report.total} images "
                  f"({report.images_per_minute():.1f} images/min)")


WORKERS_HELP = "Ray workers (default: as many as the cluster's CPUs allow)."
WORKER_CPUS_HELP = "CPUs (and onnxruntime threads) per Ray worker."
WORKER_MEMORY_HELP = "Memory per Ray worker in GiB (default: twice the encoder's weights + 0.5)."


@app.command()
@one_line_errors
def embed(
    images: list[Path] | None = typer.Argument(None, help="Image files and folders (searched "
                                                          "recursively)."),
    model: Path = typer.Option(..., "--model", help="Folder written by `focsam-onnx export`."),
    cache_dir: Path = typer.Option(..., "--cache-dir", help="Embedding cache folder to fill."),
    dataset: str | None = typer.Option(None, "--dataset", help="Encode a dataset's images "
                                                               "instead (names as `evaluate`)."),
    data_root: Path | None = typer.Option(None, "--data-root", help="The dataset's folder."),
    threads: int | None = typer.Option(None, help="onnxruntime threads (default: all cores)."),
    ray: str | None = typer.Option(None, "--ray", help=RAY_HELP),
    workers: int | None = typer.Option(None, help=WORKERS_HELP),
    worker_cpus: int = typer.Option(1, help=WORKER_CPUS_HELP),
    worker_memory_gb: float | None = typer.Option(None, help=WORKER_MEMORY_HELP),
):
    """Encode many images into the embedding cache (resumable: run it again to go on)."""
    from focsam_onnx.evaluation.datasets import dataset_images, find_images, open_dataset

    if (dataset is None) != (data_root is None):
        fail("--dataset and --data-root go together")
    if dataset is not None and images:
        fail("give image paths or --dataset, not both")
    if dataset is not None:
        paths = dataset_images(open_dataset(dataset, data_root))
    elif images:
        paths = find_images(images)
    else:
        fail("nothing to encode: give image files or folders, or --dataset")
    report = _embed(paths, model, cache_dir, threads,
                    RayOptions(ray, workers, worker_cpus, worker_memory_gb))
    _print_embed_report(report)
    if report.failures:
        raise typer.Exit(code=1)


@app.command()
@one_line_errors
def evaluate(
    model: Path = typer.Option(..., "--model", help="Folder written by `focsam-onnx export`."),
    dataset: str = typer.Option(..., "--dataset", help="grabcut, berkeley, davis, sbd, cod10k, "
                                                       "mvtec, hqseg44k, coco or folder "
                                                       "(images/ + masks/)."),
    data_root: Path = typer.Option(..., "--data-root",
                                   help="The folder that directly holds the dataset's files "
                                        "(e.g. the one with img/ and gt/ for GrabCut)."),
    out: Path = typer.Option(..., "--out", help="Results folder; an interrupted run there "
                                                "resumes (the very same run only)."),
    mode: str = typer.Option("focsam", help="focsam (refiner at click 2) or sam (no refiner)."),
    limit: int | None = typer.Option(None, help="Evaluate only the first N samples (N >= 1)."),
    seed: int = typer.Option(42, help="Seed of the click simulator's random stream."),
    seed_mode: str = typer.Option(
        "upstream", help="upstream: one stream over the dataset in order (upstream-identical); "
                         "per-sample: one stream per sample id (order-independent, NOT "
                         "upstream-identical)."),
    threads: int | None = typer.Option(None, help="onnxruntime threads (default: all usable "
                                                  "cores; more are capped to them)."),
    encoder_precision: str = typer.Option(
        "fp32", help="fp32 (upstream-exact), or bf16 / int8 where the export offers it."),
    click_precision: str = typer.Option(
        "fp32", help="Decoder and refiner: fp32 (exact), or bf16 where the export offers it "
                     "(export --click-precision bf16)."),
    cache_dir: Path | None = typer.Option(
        None, help="Image-embedding cache folder (filled by `embed`; with --ray default "
                   "OUT/embeddings)."),
    ray: str | None = typer.Option(None, "--ray", help=RAY_HELP + " The dataset is encoded "
                                   "there first; the click loop then runs here, unchanged."),
    workers: int | None = typer.Option(None, help=WORKERS_HELP),
    worker_cpus: int = typer.Option(1, help=WORKER_CPUS_HELP),
    worker_memory_gb: float | None = typer.Option(None, help=WORKER_MEMORY_HELP),
    restart: bool = typer.Option(False, "--restart", help="Discard the results of this mode "
                                                          "in --out and start over."),
):
    """NoC@85/90/95 and mIoU over 20 simulated clicks per object, exactly as upstream."""
    from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from focsam_onnx.engine.focsam_engine import FocSAMEngine
    from focsam_onnx.engine.threads import resolve_threads
    from focsam_onnx.evaluation.datasets import dataset_images, open_dataset
    from focsam_onnx.evaluation.evaluate import (
        RunSettings,
        check_results_dir,
        check_settings,
        protocol,
    )
    from focsam_onnx.evaluation.evaluate import evaluate as run_evaluation

    check_settings(RunSettings(dataset, mode, seed, seed_mode, ""), limit)
    threads = resolve_threads(threads)
    check_results_dir(out)
    samples = open_dataset(dataset, data_root)
    if ray is not None:
        if encoder_precision != "fp32":
            fail("--ray encodes with the fp32 encoder only")
        cache_dir = cache_dir or out / "embeddings"
        report = _embed(dataset_images(samples[:limit]), model, cache_dir, threads,
                        RayOptions(ray, workers, worker_cpus, worker_memory_gb))
        _print_embed_report(report)
        if report.failures:
            fail(f"{len(report.failures)} images could not be encoded")
    engine = FocSAMEngine.open(model, threads=threads, cache_dir=cache_dir,
                               encoder_precision=encoder_precision,
                               click_precision=click_precision)
    settings = RunSettings(dataset, mode, seed, seed_mode, engine.model.model_id,
                           encoder_precision, data_root=str(data_root.resolve()),
                           click_precision=click_precision)
    columns = ("{task.description}", BarColumn(), "{task.completed}/{task.total}",
               TimeElapsedColumn(), "ETA", TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{dataset} ({mode})", total=len(samples[:limit]))
        metrics = run_evaluation(
            engine, samples, out, settings, limit, restart=restart,
            on_progress=lambda done, total: progress.update(task, completed=done))
    console.print(metrics_table(metrics, f"{dataset} — {mode}"))
    console.print(protocol(dataset))
    console.print(f"results in {out}")


def metrics_table(metrics: dict, title: str) -> Table:
    """Metrics as rows (a column per subset, then overall), so 80 columns hold it when piped."""
    from focsam_onnx.evaluation.metrics import format_value

    subsets: dict[str, dict] = metrics.get("subsets", {})
    columns = {**subsets, "overall": metrics} if subsets else {"value": metrics}
    table = Table("metric", *columns, title=title)
    for key in (k for k in metrics if k != "subsets"):
        table.add_row(key, *(format_value(key, values.get(key)) for values in columns.values()))
    return table


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []})
def bench(ctx: typer.Context):
    """CPU latency benchmark (same as `python bench/latency.py`; `bench --help` for options)."""
    from focsam_onnx.bench.latency import main as bench_main

    raise typer.Exit(code=bench_main(list(ctx.args), prog="focsam-onnx bench"))


@app.command()
@one_line_errors
def serve(
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    sha256: str | None = typer.Option(None, "--sha256",
                                      help="Expected sha256 of a --weights URL."),
    images: Path | None = typer.Option(
        None, "--images", help="Folder of images to label (uploads are added to it). "
                               "Default: OUT/images."),
    out: Path = typer.Option(Path("labels"), "--out",
                             help="Labels folder: per image a folder of mask PNGs and a "
                                  "COCO-style annotations.json, saved after every click."),
    cache_dir: Path | None = typer.Option(
        None, help="Keep image embeddings here, so they survive a restart."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; any non-loopback "
                                               "address requires a token (printed)."),
    port: int = typer.Option(8000, help="TCP port."),
    threads: int | None = typer.Option(None, help="onnxruntime threads (default: all usable "
                                                  "cores; more are capped to them)."),
    prefetch: int = typer.Option(3, help="Images after the opened one to pre-encode in the "
                                         "background (0: none)."),
    encoder_precision: str = typer.Option(
        "fp32", help="fp32 (upstream-exact), or bf16 / int8 where the export offers it; the "
                     "background encoder uses the same."),
    click_precision: str = typer.Option(
        "fp32", help="Decoder and refiner: fp32 (exact), or bf16 where the export offers it "
                     "(export --click-precision bf16)."),
    token: str | None = typer.Option(None, help="Require this token (default: generated "
                                                "for a non-loopback --host)."),
    max_upload_mb: int = typer.Option(50, help="Largest accepted upload, in MB."),
    click_workers: int | None = typer.Option(
        None, help="Clicks of different objects run at once (default: usable cores); each "
                   "object's clicks stay in order."),
    click_threads: int | None = typer.Option(
        None, help="onnxruntime threads of each click's decoder and refiner runs (default: "
                   "--threads)."),
    ray: str | None = typer.Option(None, "--ray", help=RAY_HELP + " Opened images (first) and "
                                   "pre-encodes are encoded there; this process keeps the "
                                   "cache and the clicks."),
    workers: int | None = typer.Option(None, help=WORKERS_HELP),
    worker_cpus: int = typer.Option(1, help=WORKER_CPUS_HELP),
    worker_memory_gb: float | None = typer.Option(None, help=WORKER_MEMORY_HELP),
    labels: str | None = typer.Option(
        None, "--labels", help="The classes: 'person,car,...' or a file with one a line "
                               "(default: those saved in --out, else one class 'object'); "
                               "new ones may be added after the saved ones."),
):
    """Label images in the browser: click on objects, masks are saved as you go."""
    from focsam_onnx.serve.server import require_serve_extra

    require_serve_extra()
    from focsam_onnx.engine.threads import resolve_threads
    from focsam_onnx.serve.labeller import LabellerSettings
    from focsam_onnx.serve.server import run_server

    threads = resolve_threads(threads)
    if click_workers is not None and click_workers < 1:
        fail(f"--click-workers must be >= 1, got {click_workers}")
    if click_threads is not None:
        click_threads = resolve_threads(click_threads)
    if ray is not None:
        from focsam_onnx.cluster.ray_encoder import import_ray

        import_ray()  # a missing extra is one line now, not a traceback from the server
        if encoder_precision != "fp32":
            fail("--ray encodes with the fp32 encoder only")
    model = model_option(model, weights, sha256)
    images = images if images is not None else out / "images"
    images.mkdir(parents=True, exist_ok=True)
    settings = LabellerSettings(model=model, images=images, out=out, cache_dir=cache_dir,
                                threads=threads, encoder_precision=encoder_precision,
                                click_precision=click_precision, prefetch=max(0, prefetch),
                                max_upload_bytes=max_upload_mb << 20,
                                click_workers=click_workers, click_threads=click_threads,
                                ray=ray, ray_workers=workers, ray_worker_cpus=worker_cpus,
                                ray_worker_memory_bytes=(int(worker_memory_gb * 2**30)
                                                         if worker_memory_gb else None),
                                classes=parse_classes(labels) if labels else None)
    run_server(settings, host, port, token,
               announce=lambda url: console.print(f"labelling {images} into {out}; open {url}",
                                                  soft_wrap=True, highlight=False))


def parse_classes(text: str) -> tuple[str, ...]:
    """`--labels`: a file with one class a line, or the names separated by commas."""
    path = Path(text)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else text.split(",")
    return tuple(name.strip() for name in lines if name.strip())


@app.command("label-studio")
@one_line_errors
def label_studio(
    model: Path = typer.Option(..., "--model", help="Folder written by `focsam-onnx export`."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (the backend has no "
                                               "token of its own: keep it off public networks)."),
    port: int = typer.Option(9090, help="TCP port (Label Studio's ML backends use 9090)."),
    threads: int | None = typer.Option(None, help="onnxruntime threads (default: all usable "
                                                  "cores; more are capped to them)."),
    cache_dir: Path | None = typer.Option(
        None, help="Keep image embeddings here, so they survive a restart."),
):
    """Serve FocSAM as a Label Studio ML backend: smart keypoints and boxes in, brush masks out."""
    from focsam_onnx.engine.threads import resolve_threads
    from focsam_onnx.integrations.label_studio.server import open_backend, run_backend

    with console.status(f"opening {model}"):
        backend = open_backend(model, resolve_threads(threads), cache_dir)
    run_backend(backend, host, port, announce=lambda url: console.print(
        f"Label Studio ML backend {backend.model_version} on {url}; add it under the project's "
        "Settings > Model", soft_wrap=True, highlight=False))


weights_app = typer.Typer(help="Official checkpoints: list them, fetch one (resumable, "
                               "sha256-verified).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
@one_line_errors
def weights_list():
    """The known checkpoints: name, size, sha256, and where each comes from."""
    from focsam_onnx.weights.catalog import CATALOG

    for entry in CATALOG:
        size = (f"{entry.size:,} bytes" if entry.size is not None else
                "not in this build" if entry.packaged else "size not published")
        console.print(f"[bold]{entry.name}[/bold]  {entry.description}, {size}", highlight=False)
        if entry.packaged:
            console.print(f"  inside the package (weights/{entry.filename}; used without "
                          f"--model)\n  sha256 {entry.sha256 or 'not recorded in this build'}",
                          highlight=False, soft_wrap=True)
        elif entry.url is None:
            console.print(f"  by hand: {entry.by_hand}", highlight=False, soft_wrap=True)
        else:
            console.print(f"  {entry.url}\n  sha256 {entry.sha256}", highlight=False,
                          soft_wrap=True)


@weights_app.command("fetch")
@one_line_errors
def weights_fetch(
    name: str | None = typer.Argument(None, help="A name from `weights list`."),
    dest: Path = typer.Option(Path("checkpoints"), "--dest", help="Folder to download into."),
    url: str | None = typer.Option(None, "--url", help="Fetch this URL instead of a named one."),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected sha256 of --url's file."),
    timeout: float = typer.Option(30.0, help="Seconds without data before giving up (the "
                                             "partial download is kept for the next run)."),
):
    """Download a checkpoint (progress bar; resumes a partial download; sha256-verified)."""
    if (name is None) == (url is None):
        fail("give a NAME from `focsam-onnx weights list`, or --url URL with --sha256 HEX")
    url, sha256, filename, size = published_file(name or url, sha256, "--url")
    path = download(url, sha256, dest / filename, size, timeout)
    console.print(f"{path}: sha256 verified; next: focsam-onnx export --ckpt {path} "
                  f"--out exported/{Path(filename).stem}", highlight=False, soft_wrap=True)


def published_file(name_or_url: str, sha256: str | None, url_option: str
                   ) -> tuple[str, str, str, int | None]:
    """A catalogue name, or a URL with its sha256 -> (url, sha256, file name, size if known)."""
    from focsam_onnx.weights.catalog import find

    if urllib.parse.urlsplit(name_or_url).scheme not in ("http", "https"):
        entry = find(name_or_url)
        if entry.packaged:
            fail(f"{entry.name} ships inside the package (weights/{entry.filename}): nothing to "
                 "fetch; segment and serve use it without --model")
        if entry.url is None:
            fail(f"{entry.name} cannot be fetched automatically: {entry.by_hand}")
        return entry.url, entry.sha256, entry.filename, entry.size
    if sha256 is None:
        fail(f"{url_option} URL needs --sha256 HEX: a download is only kept once verified")
    filename = Path(urllib.parse.unquote(urllib.parse.urlsplit(name_or_url).path)).name
    if not filename:
        fail(f"{name_or_url} names no file; give a URL ending in the file name")
    return name_or_url, sha256, filename, None


def download(url: str, sha256: str, dest: Path, size: int | None, timeout: float = 30.0) -> Path:
    """`weights.download.fetch` with a progress bar."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from focsam_onnx.weights.download import fetch

    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(dest.name, total=size)
        return fetch(url, sha256, dest, size, timeout,
                     lambda done, total: progress.update(task, completed=done, total=total))


def model_from_weights(weights: str, sha256: str | None) -> Path:
    """The export of checkpoint `weights` (a catalogue name or a URL), fetched and exported
    into the cache on first use, reused afterwards."""
    from focsam_onnx.export.model_cache import checkpoint_path, export_dir, is_exported
    from focsam_onnx.weights.packaged import packaged_checkpoint

    entry = packaged_entry(weights)
    if entry is not None:  # ships inside the package (the demo model): checked, not fetched
        checkpoint, url, sha256, filename, size = (packaged_checkpoint(entry), None,
                                                   entry.sha256, entry.filename, entry.size)
    else:
        checkpoint = None
        url, sha256, filename, size = published_file(weights, sha256, "--weights")
    out = export_dir(filename, sha256.strip().lower())
    if is_exported(out):
        console.print(f"{weights}: the export made on first use, {out}", highlight=False,
                      soft_wrap=True)
        return out
    for module in ("torch", "onnx", "onnxscript"):
        require(module, f"exporting {weights} on first use", "export")
    from focsam_onnx.export.model_cache import export_once
    from focsam_onnx.export.model_source import quiet_exporter_logs

    if checkpoint is None:
        checkpoint = download(url, sha256, checkpoint_path(filename), size)
    if not _verbose:
        quiet_exporter_logs()
    console.print(f"{weights}: exporting {checkpoint} once into {out} (later runs reuse it)",
                  highlight=False, soft_wrap=True)
    with console.status("") as status:
        export_once(checkpoint, out, on_graph=lambda name: status.update(
            f"exporting the {name} graph and checking parity"))
    return out


def packaged_entry(name_or_url: str) -> Checkpoint | None:
    """The catalogue entry `name_or_url` names if it ships inside the package, else None."""
    from focsam_onnx.weights.catalog import find

    if urllib.parse.urlsplit(name_or_url).scheme in ("http", "https"):
        return None
    entry = find(name_or_url)
    return entry if entry.packaged else None


def model_option(model: Path | None, weights: str | None, sha256: str | None) -> Path:
    """--model DIR, --weights NAME|URL, or neither (the packaged demo model) -> the export
    folder to open."""
    from focsam_onnx.weights.catalog import DEMO

    if model is not None and weights is not None:
        fail("give --model DIR (a folder from `focsam-onnx export`) or --weights NAME "
             "(from `focsam-onnx weights list`, fetched and exported on first use), not both")
    if sha256 is not None and weights is None:
        fail("--sha256 goes with --weights URL")
    if model is not None:
        return model
    if weights is None:
        console.print(f"no --model: using the packaged demo model {DEMO} (tiny, trained on "
                      "generated shapes; not FocSAM's quality): --model DIR or --weights NAME "
                      "picks a real one (focsam-onnx weights list)", highlight=False,
                      soft_wrap=True)
        weights = DEMO
    return model_from_weights(weights, sha256)


labels_app = typer.Typer(help="The labels `serve` saves, as datasets.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")


@labels_app.command("convert")
@one_line_errors
def labels_convert(
    labels_dir: Path = typer.Argument(..., help="A labels folder (`serve --out`)."),
    fmt: str = typer.Option(..., "--format", help="coco, yolo, labelme or voc."),
    out: Path = typer.Option(..., "--out", help="New or empty folder to write."),
    images: Path | None = typer.Option(
        None, "--images", help="Copy the labelled images from here into the dataset."),
):
    """Write the labels as COCO, YOLO segmentation, LabelMe or Pascal VOC segmentation."""
    require("pycocotools.mask", "reading the saved masks", "serve")
    from focsam_onnx.labels.convert import WRITERS, convert

    if fmt not in WRITERS:
        fail(f"--format must be one of {', '.join(WRITERS)}, not {fmt!r}")
    labels = convert(labels_dir, fmt, out, images)
    objects = sum(len(i.objects) for i in labels.images)
    console.print(f"{out}: {fmt}, {len(labels.images)} images, {objects} objects, "
                  f"{len(labels.classes)} classes", highlight=False, soft_wrap=True)
    for image, why in labels.damaged.items():
        console.print(f"[yellow]left out[/yellow] {image}: {why}", highlight=False,
                      soft_wrap=True)


if __name__ == "__main__":
    app()
