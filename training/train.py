"""Train the `tiny` FocSAM from scratch on procedural scenes (the package's demo model).

    python -m focsam_onnx.training.train --out runs/demo

One step = one generated scene, up to `objects_per_step` of its objects decoded together
against one encoder pass. Prompts follow the evaluation protocol: the first click is upstream's
simulator on an empty prediction (the object's innermost pixels), each later click goes to the
largest error region of the previous prediction (engine clicker, `sfc_inner_k` as upstream's
training); the number of steps is drawn with odds gamma^k as upstream. Some steps start from the
object's box instead. The refiner runs at the second step, as FocSAM does at test time: a coarse
decode on the original embeddings, the ROI from its logits, the refined embeddings for that and
every later step. Only the last step (and the coarse decode at a refine step) carries gradients;
earlier steps are simulated without them, like SAM's and FocSAM's iterative training.

Losses, in the spirit of upstream's: class-balanced BCE + dice on the 256x256 logits against the
object's soft mask on the canvas (see `mask_loss` for why not SAM's focal), and MSE between the
IoU head's first output and the mask's real IoU. Everything is seeded from `--seed` and the step
number, so a resumed run sees the same scenes and clicks as an uninterrupted one. `out/last.pt` is
written every `--checkpoint-every` steps (atomically) and `--resume` continues from it; a resumed
run may change only the schedule's length (`SCHEDULE_FIELDS`), which the log records.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from focsam_onnx.config import EMBED_GRID, IMAGE_SIZE, LOW_RES_MASK, get_variant
from focsam_onnx.engine.preprocess import preprocess
from focsam_onnx.engine.prompts import Click
from focsam_onnx.engine.roi import roi_from_logits
from focsam_onnx.evaluation.clicker import next_click
from focsam_onnx.models.focsam import FocSAM, build_model
from focsam_onnx.training.batch import View, decode_batch, encode_view, make_trainable
from focsam_onnx.training.scenes import (
    STREAM_TRAIN,
    STREAM_VALIDATION,
    Scene,
    make_scene,
    scene_seed,
)

logger = logging.getLogger(__name__)

REFINE_STEP = 1  # the refiner runs at the second step (upstream's default refine_start_step)
COARSE_WEIGHT = 0.5  # the coarse decode at a refine step is plain SAM's answer at that step


# Settings a resumed run may change (they reshape the schedule, not the model or the data).
SCHEDULE_FIELDS = frozenset({"steps", "crop_steps", "val_every", "checkpoint_every"})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; stored in its checkpoints so `--resume` can refuse a mismatch."""

    steps: int = 1500
    seed: int = 0
    objects_per_step: int = 3
    lr: float = 3e-4
    min_lr_fraction: float = 0.05
    warmup_steps: int = 40
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    gamma: float = 0.6  # P(k extra steps) ~ gamma^k, as upstream's training
    max_extra_steps: int = 3
    box_prob: float = 0.15
    refine_prob: float = 0.6  # of the steps with two prompts or more
    sfc_inner_k: float = 1.7  # upstream's training click spread
    threads: int = 2
    crop_steps: int = 1400  # steps on crops of the canvas before the full-canvas steps
    crop_tokens: int = 32  # crop side in tokens (16 canvas pixels each)
    checkpoint_every: int = 50
    val_every: int = 250
    val_scenes: int = 3


@dataclass
class Prepared:
    """A scene made ready for the network: the canvas input and every object's target."""

    network_input: torch.Tensor  # (1, 3, 1024, 1024) normalised, B, G, R
    targets: torch.Tensor  # (K, 1, 256, 256) float soft masks on the canvas's logit grid


def prepare(scene: Scene) -> Prepared:
    """Input and targets of all objects of `scene`, through the engine's own preprocessing."""
    network_input, geometry = preprocess(np.ascontiguousarray(scene.image[..., ::-1]))
    h32, w32 = geometry.padded_hw
    rh, rw = geometry.resized_hw
    step = IMAGE_SIZE // LOW_RES_MASK
    targets = []
    for mask in scene.masks:
        padded = np.zeros((h32, w32), np.float32)
        padded[:geometry.height, :geometry.width] = mask
        canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        canvas[:rh, :rw] = cv2.resize(padded, (rw, rh), interpolation=cv2.INTER_LINEAR)
        targets.append(canvas.reshape(LOW_RES_MASK, step, LOW_RES_MASK, step).mean(axis=(1, 3)))
    return Prepared(torch.from_numpy(network_input), torch.from_numpy(np.stack(targets))[:, None])


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE + dice, per object, averaged. Both (K, 1, h, w); target in [0, 1].

    The object's pixels and the rest each carry half of the BCE, whatever the object's size.
    SAM's focal (x20) + dice, tried first, collapsed from scratch within ~10 steps to a mask that
    is empty everywhere (objects cover 1-10 % of a crop), and had not recovered by step 175.
    """
    prob = logits.sigmoid()
    positive = (target > 0.5).flatten(1).float().mean(1).clamp(1e-3, 1 - 1e-3).view(-1, 1, 1, 1)
    weight = target * (0.5 / positive) + (1 - target) * (0.5 / (1 - positive))
    bce = (weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none"))
    inter = (prob * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    return (bce.flatten(1).mean(1) + dice).mean()


def low_res_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(K,) IoU of `logits > 0` with `target > 0.5` on the logit grid."""
    pred, gt = (logits > 0).flatten(1), (target > 0.5).flatten(1)
    union = (pred | gt).sum(1).clamp(min=1)
    return (pred & gt).sum(1) / union


# Clicks are simulated on the 256x256 logit grid (4 canvas pixels a cell), where training sees
# the objects; the evaluation protocol itself (image pixels) is `focsam-onnx evaluate`'s.
CELL = IMAGE_SIZE // LOW_RES_MASK


def _cell_slices(view: View) -> tuple[slice, slice]:
    per_token = LOW_RES_MASK // EMBED_GRID
    return (slice(view.row * per_token, (view.row + view.size) * per_token),
            slice(view.col * per_token, (view.col + view.size) * per_token))


def _prompt(clicks: list[list[Click]], view: View) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks of K objects (equal counts, in view cells) -> coords (K, N, 2) (x, y) in the
    1024 frame at the cell centres, labels (K, N)."""
    rows, cols = _cell_slices(view)
    xy = [[((c.x + cols.start) * CELL + (CELL - 1) / 2, (c.y + rows.start) * CELL + (CELL - 1) / 2)
           for c in row] for row in clicks]
    labels = [[float(c.label) for c in row] for row in clicks]
    coords = torch.tensor(xy, dtype=torch.float32).reshape(len(clicks), -1, 2)
    return coords, torch.tensor(labels, dtype=torch.float32).reshape(len(clicks), -1)


def _boxes(gt: np.ndarray, view: View) -> torch.Tensor:
    """(K, h, w) view masks -> (K, 4) (x0, y0, x1, y1) boxes in the 1024 frame."""
    rows, cols = _cell_slices(view)
    boxes = []
    for mask in gt:
        ys, xs = np.nonzero(mask)
        boxes.append([(xs.min() + cols.start) * CELL, (ys.min() + rows.start) * CELL,
                      (xs.max() + 1 + cols.start) * CELL, (ys.max() + 1 + rows.start) * CELL])
    return torch.tensor(boxes, dtype=torch.float32)


def _next_clicks(logits: torch.Tensor | None, gt: np.ndarray, clicks: list[list[Click]],
                 rng: random.Random, sfc_inner_k: float) -> None:
    """Append each object's next simulated click (its last one again when nothing is wrong)."""
    for k, row in enumerate(clicks):
        pred = (np.zeros_like(gt[k]) if logits is None
                else (logits[k, 0] > 0).numpy().astype(np.uint8))
        click = next_click(pred, gt[k], row, rng, sfc_inner_k)
        if click is None:
            click = row[-1] if row else next_click(np.zeros_like(gt[k]), gt[k], [], rng)
        row.append(click)


def _roi_masks(coarse: torch.Tensor) -> torch.Tensor:
    """(K, 1, 256, 256) coarse logits -> (K, 1, 64, 64) refiner token masks (engine geometry)."""
    masks = [roi_from_logits(coarse[k:k + 1].detach().numpy()).token_mask for k in
             range(coarse.shape[0])]
    return torch.from_numpy(np.concatenate(masks))


def run_prompts(model: FocSAM, batch: Prepared, objects: list[int], view: View, n_steps: int,
                use_box: bool, refine: bool, rng: random.Random, sfc_inner_k: float,
                train: bool, embeddings: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Play `n_steps` prompt steps on `objects` of `batch`, seen through `view`.

    Returns (loss, the logits (K, 1, 4s, 4s) of each step, the targets (K, 1, 4s, 4s)). In
    training mode only the last step and the coarse decode of a refine step carry gradients.
    The refiner (full canvas only) runs at step REFINE_STEP. `embeddings` of the view, if
    given, spare the encoder pass.
    """
    rows, cols = _cell_slices(view)
    targets = batch.targets[objects][:, :, rows, cols]
    gt = (targets[:, 0] > 0.5).numpy().astype(np.uint8)
    k = len(objects)
    if embeddings is None:
        embeddings = encode_view(model, batch.network_input, view)
    clicks: list[list[Click]] = [[] for _ in range(k)]
    box = _boxes(gt, view) if use_box else None
    if not use_box:
        _next_clicks(None, gt, clicks, rng, sfc_inner_k)
    current, prev, loss, history = embeddings, None, torch.zeros(()), []
    for step in range(n_steps):
        last = step == n_steps - 1
        refine_now = refine and view.is_full and step == REFINE_STEP
        coords, labels = _prompt(clicks, view)
        with torch.set_grad_enabled(train and (last or refine_now)):
            if refine_now:
                coarse, token, _ = decode_batch(model, embeddings, coords, labels, prev, box)
                loss = loss + COARSE_WEIGHT * mask_loss(coarse, targets)
                current = model.refine_head(embeddings.expand(k, -1, -1, -1), token,
                                            _roi_masks(coarse))
            logits, _, iou_pred = decode_batch(model, current, coords, labels, prev, box, view)
        history.append(logits.detach())
        if last:
            iou = low_res_iou(logits.detach(), targets)
            loss = loss + mask_loss(logits, targets) + F.mse_loss(iou_pred[:, 0], iou)
            break
        prev = logits.detach()
        _next_clicks(prev, gt, clicks, rng, sfc_inner_k)
    return loss, history, targets


def _pick_view(batch: Prepared, rng: np.random.Generator, size: int, limit: int
               ) -> tuple[View, list[int]]:
    """A crop of `size` tokens around a random object, and up to `limit` objects well inside."""
    per_token = LOW_RES_MASK // EMBED_GRID
    areas = (batch.targets[:, 0] > 0.5).flatten(1).sum(1).numpy()
    anchor = int(rng.choice(np.flatnonzero(areas > 0)))
    ys, xs = np.nonzero(batch.targets[anchor, 0].numpy() > 0.5)
    centre = np.array([ys.mean(), xs.mean()]) / per_token + rng.uniform(-size / 5, size / 5, 2)
    row, col = (int(np.clip(round(c - size / 2), 0, EMBED_GRID - size)) for c in centre)
    view = View(row, col, size)
    rows, cols = _cell_slices(view)
    inside = (batch.targets[:, 0, rows, cols] > 0.5).flatten(1).sum(1).numpy()
    candidates = [i for i in np.flatnonzero((inside >= 40) & (inside >= 0.5 * areas))
                  if i != anchor]
    others = [int(i) for i in rng.permutation(candidates)[:limit - 1]] if candidates else []
    return view, sorted([anchor, *others])


def training_scene(cfg: TrainConfig, step: int) -> tuple[Scene, np.random.Generator]:
    """The scene of `step` (the first of its seeds that has an object) and the step's RNG."""
    for attempt in range(64):
        scene = make_scene(scene_seed(STREAM_TRAIN, cfg.seed, step * 64 + attempt))
        if scene.kinds:
            break
    return scene, np.random.default_rng([STREAM_TRAIN, cfg.seed, step, 1_000_003])


def _draw_steps(cfg: TrainConfig, rng: np.random.Generator) -> int:
    odds = cfg.gamma ** np.arange(cfg.max_extra_steps + 1)
    return 1 + int(rng.choice(len(odds), p=odds / odds.sum()))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine down to `min_lr_fraction * lr` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def train_step(model: FocSAM, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
               step: int) -> float:
    scene, rng = training_scene(cfg, step)
    batch = prepare(scene)
    full = step >= cfg.crop_steps
    if full:
        order = rng.permutation(len(scene.kinds))
        view, objects = View.FULL, sorted(int(i) for i in order[:cfg.objects_per_step])
    else:
        view, objects = _pick_view(batch, rng, cfg.crop_tokens, cfg.objects_per_step)
    n_steps = _draw_steps(cfg, rng)
    use_box = bool(rng.random() < cfg.box_prob)
    refine = full and n_steps > REFINE_STEP and bool(rng.random() < cfg.refine_prob)
    clicker = random.Random(int(rng.integers(2**62)))
    for group in optimizer.param_groups:
        group["lr"] = lr_at(cfg, step)
    model.train()
    loss, _, _ = run_prompts(model, batch, objects, view, n_steps, use_box, refine, clicker,
                             cfg.sfc_inner_k, train=True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def validate(model: FocSAM, cfg: TrainConfig, clicks: int = 3) -> dict[str, list[float]]:
    """Mean IoU (on the logit grid) after 1..`clicks` simulated clicks on the full canvas, with
    the refiner at the 2nd click and without, over the compact objects of `cfg.val_scenes`
    validation scenes (a seed stream training never draws from)."""
    model.eval()
    results: dict[str, list[list[float]]] = {}
    for i in range(cfg.val_scenes):
        scene = make_scene(scene_seed(STREAM_VALIDATION, cfg.seed, i))
        objects = scene.compact()
        if not objects:
            continue
        batch = prepare(scene)
        embeddings = model.encode(batch.network_input)
        for name, refine in (("sam", False), ("refine", True)):
            _, history, targets = run_prompts(model, batch, objects, View.FULL, clicks, False,
                                              refine, random.Random(42), 1.0, train=False,
                                              embeddings=embeddings)
            per_click = results.setdefault(name, [[] for _ in range(clicks)])
            for step, logits in enumerate(history):
                per_click[step].extend(low_res_iou(logits, targets).tolist())
    return {name: [round(float(np.mean(v)), 4) for v in per_click]
            for name, per_click in results.items()}


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def new_model(cfg: TrainConfig) -> FocSAM:
    return make_trainable(build_model(get_variant("tiny"), seed=cfg.seed))


def train(cfg: TrainConfig, out: Path, resume: bool = False) -> FocSAM:
    """Run (or continue) training; writes out/last.pt, out/log.jsonl and out/final.pt."""
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    model = new_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, elapsed = 0, 0.0
    last = out / "last.pt"
    if resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        changed = {k: (v, getattr(cfg, k)) for k, v in state["config"].items()
                   if getattr(cfg, k) != v}
        if set(changed) - SCHEDULE_FIELDS:
            raise ValueError(f"{last} was written with other settings (was, now): {changed}")
        if changed:  # a shortened or lengthened run: recorded, since it changes the lr schedule
            logger.warning("resuming with a new schedule (was, now): %s", changed)
            with open(out / "log.jsonl", "a") as log:
                log.write(json.dumps({"step": int(state["step"]), "schedule_change": changed})
                          + "\n")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        logger.info("resuming at step %d", start)
    from rich.progress import (  # noqa: PLC0415 - rich comes with typer
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    running, val = None, float("nan")
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns) as progress, open(out / "log.jsonl", "a") as log:
        task = progress.add_task("train", total=cfg.steps, completed=start, status="")
        for step in range(start, cfg.steps):
            began = time.perf_counter()
            loss = train_step(model, optimizer, cfg, step)
            elapsed += time.perf_counter() - began
            running = loss if running is None else 0.95 * running + 0.05 * loss
            record = {"step": step + 1, "loss": loss, "lr": lr_at(cfg, step),
                      "elapsed_s": round(elapsed, 1)}
            if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
                record["val_iou"] = ious = validate(model, cfg)
                val = ious.get("refine", [float("nan")])[-1]
            log.write(json.dumps(record) + "\n")
            log.flush()
            progress.update(task, advance=1,
                            status=f"loss {running:.3f}  val IoU@3 {val:.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                _save(last, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "step": step + 1, "elapsed_s": elapsed,
                             "config": dataclasses.asdict(cfg)})
    _save(out / "final.pt", {"model": model.state_dict(), "config": dataclasses.asdict(cfg),
                             "elapsed_s": elapsed})
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    for field in dataclasses.fields(TrainConfig):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default),
                            default=field.default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    train(cfg, args.out, args.resume)


if __name__ == "__main__":
    main()
