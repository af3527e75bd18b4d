"""NoC evaluation exactly as upstream's test loop: 20 simulated clicks per object.

Clicks come from one `random.Random(seed)` stream shared by all samples in dataset order (what
upstream's single process does), so results are reproducible only in that order; the
"per-sample" seed mode (one stream per sample id) is order-independent but not upstream-identical.

Progress is one file, atomically replaced after every sample, that names exactly what is being
evaluated (settings, limit, code version, and every sample's id and content hash): an
interrupted run resumes where it stopped, and a rerun with anything different is refused
rather than mixed with the old results. The results files are derived from it at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from focsam_onnx import __version__
from focsam_onnx.engine.atomic_io import atomic_write
from focsam_onnx.engine.click_session import (
    UPSTREAM_REFINE_STEP,
    ClickSession,
    RefineAt,
    StepObserver,
)
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.integrity import file_sha256
from focsam_onnx.engine.prompts import Click, prompts_to_json
from focsam_onnx.errors import InvalidInput, require
from focsam_onnx.evaluation.clicker import next_click
from focsam_onnx.evaluation.datasets import NOT_IN_UPSTREAM, Sample
from focsam_onnx.evaluation.metrics import binary_iou, markdown_table, summarize

log = logging.getLogger(__name__)

NUM_CLICKS = 20
MODES: dict[str, RefineAt] = {"focsam": UPSTREAM_REFINE_STEP, "sam": None}  # mode -> refine step
SEED_MODES = ("upstream", "per-sample")
PROGRESS_FORMAT = 1


class ResumeError(InvalidInput):
    """The results folder holds a run that differs from the one asked for."""


@dataclass(frozen=True)
class SampleResult:
    id: str
    ious: list[float]
    clicks: list[dict]  # the clicks made, in the prompts' one JSON form ({x, y, positive})


@dataclass(frozen=True)
class RunSettings:
    dataset: str
    mode: str
    seed: int
    seed_mode: str
    model_id: str
    encoder_precision: str = "fp32"  # NoC tables say which encoder made them
    data_root: str = ""  # recorded so that a resume from another copy of the data is refused
    num_clicks: int = NUM_CLICKS
    click_precision: str = "fp32"  # the decoder's and refiner's (fp32 exact unless asked)


def check_settings(settings: RunSettings, limit: int | None = None) -> None:
    """Raise ValueError for an unknown mode or seed mode, or a limit below 1 (cheap: no I/O)."""
    if settings.mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {settings.mode!r}")
    if settings.seed_mode not in SEED_MODES:
        raise InvalidInput(f"seed mode must be one of {', '.join(SEED_MODES)}, "
                           f"got {settings.seed_mode!r}")
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit must be >= 1 (or absent for all samples), got {limit}")
    if settings.num_clicks < 1:
        raise InvalidInput(f"num_clicks must be >= 1, got {settings.num_clicks}")


def check_results_dir(out_dir: str | Path) -> None:
    """Raise ValueError unless `out_dir` is a folder or can be made one (before slow work)."""
    out_dir = Path(out_dir)
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InvalidInput(f"results folder {out_dir}: {existing} is a file, not a folder; "
                           "choose another --out")
    if existing is not None and not _writable(existing):
        raise InvalidInput(f"results folder {out_dir}: {existing} is not writable; "
                           "choose another --out")


def run_object(engine: FocSAMEngine, image: np.ndarray, gt: np.ndarray, rng: random.Random,
               refine_at: RefineAt, num_clicks: int = NUM_CLICKS
               ) -> tuple[list[float], list[Click]]:
    """Open `image` and run `simulate_clicks` on it; returns the IoUs and the clicks made."""
    session = ClickSession(engine, engine.open_image(image), refine_at)
    return simulate_clicks(session, gt, rng, num_clicks), list(session.clicks)


def simulate_clicks(session: ClickSession, gt: np.ndarray, rng: random.Random,
                    num_clicks: int = NUM_CLICKS,
                    observer: StepObserver | None = None) -> list[float]:
    """Upstream's per-object loop (spec §6.2) on a fresh `session`: a simulated click, then a
    prediction, `num_clicks` times (a step may add no click). Returns the IoU after every step;
    `observer(click, result)` sees each step (the quality gate, the bench).

    gt: (H, W) uint8/bool, the object at the original image size.
    """
    pred = np.zeros(gt.shape, np.uint8)
    ious = []
    for _ in range(num_clicks):
        click = next_click(pred, gt, session.clicks, rng)
        if click is None and not session.clicks:
            raise InvalidInput("the ground truth is empty: nothing to click")
        result = session.step(click)
        if observer is not None:
            observer(click, result)
        pred = result.mask.astype(np.uint8)
        ious.append(binary_iou(pred, gt))
    return ious


def evaluate(engine: FocSAMEngine, samples: Sequence[Sample], out_dir: str | Path,
             settings: RunSettings, limit: int | None = None,
             on_progress: Callable[[int, int], None] | None = None,
             restart: bool = False) -> dict:
    """Evaluate `samples[:limit]`, resuming the run recorded in `out_dir` if it is this one.

    A recorded run with other settings, limit, code version or samples raises ResumeError
    saying what changed, unless `restart` discards it. Writes per_sample, metrics (JSON and a
    markdown table) and the mIoU curve; returns the metrics.
    """
    check_settings(settings, limit)
    check_results_dir(out_dir)
    require("matplotlib", "evaluate's mIoU curve", "evaluate")  # now, not after the run
    if settings.encoder_precision != engine.model.encoder_precision:
        raise InvalidInput(f"settings say encoder precision {settings.encoder_precision}, the "
                           f"engine runs {engine.model.encoder_precision}")
    if settings.click_precision != engine.model.click_precision:
        raise InvalidInput(f"settings say click precision {settings.click_precision}, the "
                           f"engine runs {engine.model.click_precision}")
    samples = list(samples)[:limit]
    files = ResultFiles(Path(out_dir), settings.mode)
    record = run_record(settings, samples, limit)
    if restart:
        files.discard()
    progress = files.resume(record, settings.seed)
    for i, sample in enumerate(samples):
        if i < progress.done:
            continue  # done before the interruption
        if on_progress is not None:
            on_progress(i, len(samples))
        progress.add(evaluate_sample(engine, sample, settings, progress.rng))
        files.save_progress(progress)
    if on_progress is not None:
        on_progress(len(samples), len(samples))
    return files.save_results(settings, summary(progress, samples), progress)


def evaluate_sample(engine: FocSAMEngine, sample: Sample, settings: RunSettings,
                    rng: random.Random) -> SampleResult | str:
    """One sample's result, or its id when its object is empty (skipped, as upstream cannot)."""
    sample_id, image, gt = sample.load()
    if not gt.any():
        log.warning("skipping %s: its object is empty", sample_id)
        return sample_id
    if settings.seed_mode == "per-sample":
        rng.seed(f"{settings.seed}:{sample_id}")
    ious, clicks = run_object(engine, image, gt, rng, MODES[settings.mode], settings.num_clicks)
    return SampleResult(sample_id, ious, prompts_to_json(clicks))


def summary(progress: Progress, samples: Sequence[Sample]) -> dict:
    """The run's metrics; with a `subsets` entry when the samples belong to named subsets."""
    metrics = _summary(progress.results, progress.skipped)
    subsets = list(dict.fromkeys(s.subset for s in samples if s.subset))
    if subsets:
        subset_of = {s.id: s.subset for s in samples}
        metrics["subsets"] = {
            name: _summary([r for r in progress.results if subset_of.get(r.id) == name],
                           [i for i in progress.skipped if subset_of.get(i) == name])
            for name in subsets}
    return metrics


def _summary(results: list[SampleResult], skipped: list[str]) -> dict:
    metrics = summarize([r.ious for r in results]) if results else {"samples": 0}
    metrics["skipped"] = len(skipped)
    return metrics


def protocol(dataset: str) -> str:
    """What the numbers of `dataset` are: upstream's protocol, on upstream's list or ours."""
    text = f"FocSAM protocol (upstream's click simulator, {NUM_CLICKS} clicks per object)"
    return f"{text} applied to {NOT_IN_UPSTREAM[dataset]}" if dataset in NOT_IN_UPSTREAM else text


def run_record(settings: RunSettings, samples: Sequence[Sample], limit: int | None) -> dict:
    """Everything the results depend on: settings, limit, code version, each sample's content."""
    digests: dict[Path, str] = {}  # SBD's instances share their image and annotation files

    def digest(path: Path) -> str:
        if path not in digests:
            digests[path] = file_sha256(path)
        return digests[path]

    listed = []
    for s in samples:
        content = (f"{digest(s.image_path)}:{digest(s.gt_path)}:{s.object_id}:{s.gt_format}:"
                   f"{s.subset}")
        listed.append([s.id, hashlib.sha256(content.encode()).hexdigest()[:32]])
    return {"format": PROGRESS_FORMAT, "code_version": __version__, **asdict(settings),
            "limit": limit, "samples": listed}


def describe_changes(recorded: dict, current: dict) -> str:
    """What differs between two run records, in words (samples summarised, not listed)."""
    changes = [f"{key} {recorded.get(key)!r} -> {current.get(key)!r}"
               for key in current if key != "samples" and recorded.get(key) != current.get(key)]
    if recorded.get("samples") != current["samples"]:
        old, new = dict(map(tuple, recorded.get("samples") or [])), dict(current["samples"])
        parts = [f"{len(old)} recorded, {len(new)} now"]
        for word, ids in (("added", [i for i in new if i not in old]),
                          ("removed", [i for i in old if i not in new]),
                          ("with other content", [i for i in new if i in old and
                                                  old[i] != new[i]])):
            if ids:
                parts.append(f"{len(ids)} {word} (e.g. {ids[0]!r})")
        if len(parts) == 1:
            parts.append("in another order")
        changes.append("samples: " + ", ".join(parts))
    return "; ".join(changes)


@dataclass
class Progress:
    """A run's state after its first `done` samples: results, skipped ids, the RNG."""

    record: dict
    results: list[SampleResult]
    skipped: list[str]
    rng: random.Random

    @property
    def done(self) -> int:
        return len(self.results) + len(self.skipped)

    def add(self, outcome: SampleResult | str) -> None:
        if isinstance(outcome, str):
            self.skipped.append(outcome)
        else:
            self.results.append(outcome)

    def to_json(self) -> str:
        # The RNG state, not a click count, resumes the stream: one choice may take many draws.
        version, internal, gauss = self.rng.getstate()
        return json.dumps({"run": self.record, "results": [asdict(r) for r in self.results],
                           "skipped": self.skipped, "rng_state": [version, list(internal), gauss]})

    @classmethod
    def from_json(cls, text: str) -> Progress:
        data = json.loads(text)
        rng = random.Random()
        version, internal, gauss = data["rng_state"]
        rng.setstate((version, tuple(internal), gauss))
        return cls(data["run"], [SampleResult(**r) for r in data["results"]],
                   list(data["skipped"]), rng)


class ResultFiles:
    """The files of one mode in a results folder; FocSAM's keep the plain names."""

    def __init__(self, folder: Path, mode: str):
        self.folder = folder
        suffix = "" if mode == "focsam" else f".{mode}"
        self.per_sample = folder / f"per_sample{suffix}.json"
        self.metrics = folder / f"metrics{suffix}.json"
        self.table = folder / f"metrics{suffix}.md"
        self.progress = folder / f".progress{suffix}.json"
        self.legacy = folder / f".resume{suffix}.json"  # an older focsam-onnx's resume state

    def discard(self) -> None:
        for path in (self.progress, self.legacy, self.per_sample, self.metrics, self.table):
            path.unlink(missing_ok=True)

    def resume(self, record: dict, seed: int) -> Progress:
        """The recorded progress of this very run, or a fresh start; ResumeError otherwise."""
        hint = (f"rerun with --restart to discard those results, or choose another --out "
                f"than {self.folder}")
        if not self.progress.is_file():
            if any(p.exists() for p in (self.per_sample, self.metrics, self.legacy)):
                raise ResumeError(f"{self.folder} holds results without a progress record "
                                  f"(made by another tool or an older focsam-onnx): {hint}")
            return Progress(record, [], [], random.Random(seed))
        try:
            progress = Progress.from_json(self.progress.read_text())
        except (ValueError, KeyError, TypeError) as err:
            raise ResumeError(f"{self.progress} is unreadable ({err}): {hint}") from None
        if progress.record != record:
            raise ResumeError(f"{self.folder} holds another run "
                              f"({describe_changes(progress.record, record)}): {hint}")
        if progress.done:
            log.info("resuming after %d of %d samples", progress.done, len(record["samples"]))
        return progress

    def save_progress(self, progress: Progress) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.progress, progress.to_json())

    def save_results(self, settings: RunSettings, metrics: dict, progress: Progress) -> dict:
        """per_sample, metrics (JSON and markdown) and the plot; returns `metrics`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        ious = [r.ious for r in progress.results]
        curve = np.mean(ious, axis=0).tolist() if ious else []
        atomic_write(self.per_sample, json.dumps([asdict(r) for r in progress.results]))
        atomic_write(self.metrics, json.dumps({
            **metrics, "mIoU_curve": curve, "mode": settings.mode, "dataset": settings.dataset,
            "seed": settings.seed, "seed_mode": settings.seed_mode,
            "protocol": protocol(settings.dataset),
            "encoder_precision": settings.encoder_precision,
            "click_precision": settings.click_precision}))
        title = (f"{settings.dataset} — {settings.mode} (seed {settings.seed}, "
                 f"{settings.seed_mode}, {settings.encoder_precision} encoder, "
                 f"{settings.click_precision} decoder and refiner)")
        atomic_write(self.table, markdown_table(metrics, title, protocol(settings.dataset)) + "\n")
        plot_miou_curves(self.folder)
        return metrics


def plot_miou_curves(folder: Path) -> Path:
    """miou_curve.png: mIoU vs clicks for every mode evaluated into `folder`."""
    matplotlib = require("matplotlib", "the mIoU curve", "evaluate")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for mode in MODES:
        path = ResultFiles(folder, mode).metrics
        if path.is_file() and (curve := json.loads(path.read_text()).get("mIoU_curve")):
            label = "FocSAM" if mode == "focsam" else "SAM"
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label)
    ax.set(xlabel="clicks", ylabel="mIoU", xticks=range(0, NUM_CLICKS + 1, 2), ylim=(0, 1))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="lower right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    path = folder / "miou_curve.png"
    atomic_write(path, png.getvalue())
    return path


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)
