"""NoC evaluation exactly as upstream's test loop: 20 simulated clicks per object.

Clicks come from one `random.Random(seed)` stream shared by all samples in dataset order (what
upstream's single process does), so results are reproducible only in that order; the
"per-sample" seed mode (one stream per sample id) is order-independent but not upstream-identical.
Results are written after every sample, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from focsam_onnx.engine.atomic_io import atomic_write
from focsam_onnx.engine.click_session import UPSTREAM_REFINE_STEP, ClickSession
from focsam_onnx.engine.clicker import next_click
from focsam_onnx.engine.datasets import NOT_IN_UPSTREAM, Sample
from focsam_onnx.engine.metrics import binary_iou, markdown_table, summarize
from focsam_onnx.engine.prompts import Click
from focsam_onnx.engine.runtime import FocSAMEngine

log = logging.getLogger(__name__)

NUM_CLICKS = 20
MODES = {"focsam": UPSTREAM_REFINE_STEP, "sam": None}  # mode -> refine step
SEED_MODES = ("upstream", "per-sample")


@dataclass(frozen=True)
class SampleResult:
    id: str
    ious: list[float]
    clicks: list[list[int]]  # [x, y, label] in original image pixels, label 1 / 0


@dataclass(frozen=True)
class RunSettings:
    dataset: str
    mode: str
    seed: int
    seed_mode: str
    model_id: str
    encoder_precision: str = "fp32"  # NoC tables say which encoder made them


def run_object(engine: FocSAMEngine, image: np.ndarray, gt: np.ndarray, rng: random.Random,
               refine_at: int | None, num_clicks: int = NUM_CLICKS
               ) -> tuple[list[float], list[Click]]:
    """Open `image` and run `simulate_clicks` on it; returns the IoUs and the clicks made."""
    session = ClickSession(engine, engine.open_image(image), refine_at)
    return simulate_clicks(session, gt, rng, num_clicks), list(session.clicks)


def simulate_clicks(session: ClickSession, gt: np.ndarray, rng: random.Random,
                    num_clicks: int = NUM_CLICKS) -> list[float]:
    """Upstream's per-object loop (spec §6.2) on a fresh `session`: a simulated click, then a
    prediction, `num_clicks` times (a step may add no click). Returns the IoU after every step.

    gt: (H, W) uint8/bool, the object at the original image size.
    """
    pred = np.zeros(gt.shape, np.uint8)
    ious = []
    for _ in range(num_clicks):
        click = next_click(pred, gt, session.clicks, rng)
        if click is None and not session.clicks:
            raise ValueError("the ground truth is empty: nothing to click")
        pred = session.step(click).mask.astype(np.uint8)
        ious.append(binary_iou(pred, gt))
    return ious


def evaluate(engine: FocSAMEngine, samples: Sequence[Sample], out_dir: str | Path,
             settings: RunSettings, limit: int | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Evaluate `samples` (resuming from `out_dir` if a run with the same settings is there).

    Writes per_sample, metrics (JSON and a markdown table) and the mIoU curve; returns metrics.
    """
    if settings.mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {settings.mode!r}")
    if settings.encoder_precision != engine.model.encoder_precision:
        raise ValueError(f"settings say encoder precision {settings.encoder_precision}, the "
                         f"engine runs {engine.model.encoder_precision}")
    if settings.seed_mode not in SEED_MODES:
        raise ValueError(f"seed mode must be one of {SEED_MODES}, got {settings.seed_mode!r}")
    out = ResultFiles(Path(out_dir), settings.mode)
    samples = list(samples)[:limit]
    results, skipped, rng = out.resume(settings)
    for i, sample in enumerate(samples):
        if i < len(results) + len(skipped):
            continue  # done before the interruption
        if on_progress is not None:
            on_progress(i, len(samples))
        sample_id, image, gt = sample.load()
        if not gt.any():
            log.warning("skipping %s: its object is empty", sample_id)
            skipped.append(sample_id)
        else:
            if settings.seed_mode == "per-sample":
                rng = random.Random(f"{settings.seed}:{sample_id}")
            ious, clicks = run_object(engine, image, gt, rng, MODES[settings.mode])
            results.append(SampleResult(sample_id, ious, [[c.x, c.y, c.label] for c in clicks]))
        out.save_progress(settings, results, skipped, rng)
    if on_progress is not None:
        on_progress(len(samples), len(samples))
    metrics = _summary(results, skipped)
    subsets = list(dict.fromkeys(s.subset for s in samples if s.subset))
    if subsets:
        subset_of = {s.id: s.subset for s in samples}
        metrics["subsets"] = {
            name: _summary([r for r in results if subset_of.get(r.id) == name],
                           [i for i in skipped if subset_of.get(i) == name])
            for name in subsets}
    out.save_metrics(settings, metrics, [r.ious for r in results])
    return metrics


def _summary(results: list[SampleResult], skipped: list[str]) -> dict:
    metrics = summarize([r.ious for r in results]) if results else {"samples": 0}
    metrics["skipped"] = len(skipped)
    return metrics


def protocol(dataset: str) -> str:
    """What the numbers of `dataset` are: upstream's protocol, on upstream's list or ours."""
    text = f"FocSAM protocol (upstream's click simulator, {NUM_CLICKS} clicks per object)"
    return f"{text} applied to {NOT_IN_UPSTREAM[dataset]}" if dataset in NOT_IN_UPSTREAM else text


class ResultFiles:
    """The files of one mode in a results folder; FocSAM's keep the plain names."""

    def __init__(self, folder: Path, mode: str):
        self.folder = folder
        suffix = "" if mode == "focsam" else f".{mode}"
        self.per_sample = folder / f"per_sample{suffix}.json"
        self.metrics = folder / f"metrics{suffix}.json"
        self.table = folder / f"metrics{suffix}.md"
        self.state = folder / f".resume{suffix}.json"

    def resume(self, settings: RunSettings
               ) -> tuple[list[SampleResult], list[str], random.Random]:
        rng = random.Random(settings.seed)
        if not (self.per_sample.is_file() and self.state.is_file()):
            return [], [], rng
        state = json.loads(self.state.read_text())
        if state.get("settings") != asdict(settings):
            log.warning("%s holds a run with other settings; starting over", self.folder)
            return [], [], rng
        results = [SampleResult(**r) for r in json.loads(self.per_sample.read_text())]
        rng.setstate(_rng_state_from_json(state["rng_state"]))
        log.info("resuming after %d samples", len(results) + len(state["skipped"]))
        return results, list(state["skipped"]), rng

    def save_progress(self, settings: RunSettings, results: list[SampleResult],
                      skipped: list[str], rng: random.Random) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.per_sample, [asdict(r) for r in results])
        # The RNG state, not a click count, resumes the stream: one choice may take many draws.
        _write_json(self.state, {"settings": asdict(settings), "skipped": skipped,
                                 "rng_state": _rng_state_to_json(rng.getstate())})

    def save_metrics(self, settings: RunSettings, metrics: dict,
                     ious: list[list[float]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        curve = np.mean(ious, axis=0).tolist() if ious else []
        _write_json(self.metrics, {**metrics, "mIoU_curve": curve, "mode": settings.mode,
                                   "dataset": settings.dataset, "seed": settings.seed,
                                   "seed_mode": settings.seed_mode,
                                   "protocol": protocol(settings.dataset),
                                   "encoder_precision": settings.encoder_precision})
        title = (f"{settings.dataset} — {settings.mode} (seed {settings.seed}, "
                 f"{settings.seed_mode}, {settings.encoder_precision} encoder)")
        self.table.write_text(markdown_table(metrics, title, protocol(settings.dataset)) + "\n")
        plot_miou_curves(self.folder)


def plot_miou_curves(folder: Path) -> Path:
    """miou_curve.png: mIoU vs clicks for every mode evaluated into `folder`."""
    import matplotlib

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
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = folder / "miou_curve.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _rng_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss


def _write_json(path: Path, data: object) -> None:
    atomic_write(path, json.dumps(data))
