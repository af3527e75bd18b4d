"""Train the `tiny` FocSAM from scratch on procedural scenes (the package's demo model).

    python -m focsam_onnx.training.train --out runs/demo

Most steps take crops of `crops_per_step` scenes (28 x 28 tokens each, around an object) through
one encoder pass and decode up to `objects_per_step` objects of each; every `full_every`-th
step, and every step from `crop_steps` on, is one whole canvas instead, so the model also learns
what it sees at test time (global attention over all 4,096 tokens). Prompts follow the
evaluation protocol: the first click is upstream's simulator on an empty prediction (the
object's innermost pixels), each later click goes to the largest error region of the previous
prediction (engine clicker, `sfc_inner_k` as upstream's training); the number of prompt steps is
drawn with odds gamma^k as upstream. Some steps start from the object's box instead. The refiner
runs at the second step, as FocSAM does at test time: a coarse decode on the original
embeddings, the ROI from its logits, the refined embeddings for that and every later step. Each
step's masks carry a loss (`supervise_every_step`); a step's clicks come from the previous
step's detached logits, as in SAM's and FocSAM's iterative training.

Losses, in the spirit of upstream's: BCE + dice on the logits against the object's soft mask,
the BCE class-balanced at first and plain after `balance_steps` (see `mask_loss` for why, and
why not SAM's focal), and MSE between the IoU head's first output and the mask's real IoU.
Everything is seeded from `--seed` and the step number, so a resumed run sees the same scenes
and clicks as an uninterrupted one. `out/last.pt` is written every `--checkpoint-every` steps
(atomically) and `--resume` continues from it; a resumed run may change only the schedule's
length (`SCHEDULE_FIELDS`), which the log records.
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
from focsam_onnx.training.batch import (
    View,
    decode_batch,
    encode_views,
    make_trainable,
    view_pe,
)
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


def _setting(default, help_text: str):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; stored in its checkpoints so `--resume` can refuse a mismatch."""

    steps: int = _setting(1600, "optimizer steps in all")
    seed: int = _setting(0, "seeds the init, the scenes and the clicks")
    objects_per_step: int = _setting(5, "objects decoded per crop (or full canvas)")
    lr: float = _setting(1.5e-4, "peak AdamW learning rate")
    min_lr_fraction: float = _setting(0.05, "the cosine ends at this fraction of lr")
    warmup_steps: int = _setting(150, "linear warm-up steps")
    weight_decay: float = _setting(0.01, "AdamW weight decay")
    grad_clip: float = _setting(1.0, "gradient norm clip")
    gamma: float = _setting(0.6, "P(k extra prompt steps) ~ gamma^k, as upstream's training")
    max_extra_steps: int = _setting(3, "most prompt steps after the first")
    box_prob: float = _setting(0.15, "share of steps that start from the object's box")
    refine_prob: float = _setting(0.3, "share of the steps with 2+ prompts that refine")
    sfc_inner_k: float = _setting(1.7, "upstream's training click spread")
    threads: int = _setting(2, "torch threads")
    crop_steps: int = _setting(1530, "steps before the last, full-canvas-only ones")
    crop_tokens: int = _setting(28, "crop side in tokens (16 canvas pixels each)")
    crops_per_step: int = _setting(4, "crops of as many scenes in one encoder pass")
    supervise_every_step: bool = _setting(True, "a loss on every prompt step, not the last only")
    balance_steps: int = _setting(500, "the BCE's class balance fades out linearly over these "
                                  "first steps, plain BCE after them (0: balanced throughout)")
    full_every: int = _setting(4, "before crop_steps, every n-th step is a full canvas (0: none)")
    checkpoint_every: int = _setting(100, "steps between OUT/last.pt writes")
    val_every: int = _setting(400, "steps between validations")
    val_scenes: int = _setting(3, "validation scenes")
    bf16: bool = _setting(True, "forward passes (and so their backward) in bfloat16 autocast; the "
                          "weights, optimizer, losses and validation stay float32")


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


def mask_loss(logits: torch.Tensor, target: torch.Tensor, balance: float = 1.0) -> torch.Tensor:
    """BCE + dice, per object, averaged. Both (K, 1, h, w); target in [0, 1].

    With `balance` 1 the BCE is class-balanced: the object's pixels and the rest each carry half
    of it, whatever the object's size. SAM's focal (x20) + dice, tried first, collapsed from
    scratch within ~10 steps to a mask that is empty everywhere (objects cover 1-10 % of a crop),
    and had not recovered by step 175; so does plain BCE + dice. But a balanced BCE's optimum
    calls a pixel the object's once its odds exceed the object's share of the view, so it
    over-segments (into neighbours too): `balance` between 0 and 1 weights by the balanced
    weights raised to it, and 0 is plain BCE, which puts the decision at even odds.
    """
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if balance:
        positive = (target > 0.5).flatten(1).float().mean(1).clamp(1e-3, 1 - 1e-3)
        positive = positive.view(-1, 1, 1, 1)
        weight = target * (0.5 / positive) + (1 - target) * (0.5 / (1 - positive))
        bce = weight ** balance * bce
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


@dataclass
class Objects:
    """K objects to prompt, each seen through its own view (all views of one size)."""

    embeddings: torch.Tensor  # (K, 256, s, s) of each object's view
    grid_pe: torch.Tensor  # (K, 256, s, s)
    targets: torch.Tensor  # (K, 1, 4s, 4s) soft masks on the views' logit grids
    views: list[View]

    @classmethod
    def gather(cls, model: FocSAM, batches: list[Prepared], views: list[View],
               objects: list[list[int]], embeddings: torch.Tensor | None = None) -> Objects:
        """The objects `objects[i]` of `batches[i]` through `views[i]` (one encoder pass)."""
        if embeddings is None:
            embeddings = encode_views(model, [b.network_input for b in batches], views)
        index = [i for i, chosen in enumerate(objects) for _ in chosen]
        targets = []
        for batch, view, chosen in zip(batches, views, objects):
            rows, cols = _cell_slices(view)
            targets.append(batch.targets[chosen][:, :, rows, cols])
        return cls(embeddings[index], torch.cat([view_pe(model, views[i]) for i in index]),
                   torch.cat(targets), [views[i] for i in index])


def _prompt(clicks: list[list[Click]], views: list[View]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks of K objects (equal counts, in view cells) -> coords (K, N, 2) (x, y) in the
    1024 frame at the cell centres, labels (K, N)."""
    xy = []
    for row, view in zip(clicks, views):
        rows, cols = _cell_slices(view)
        xy.append([((c.x + cols.start) * CELL + (CELL - 1) / 2,
                    (c.y + rows.start) * CELL + (CELL - 1) / 2) for c in row])
    labels = [[float(c.label) for c in row] for row in clicks]
    coords = torch.tensor(xy, dtype=torch.float32).reshape(len(clicks), -1, 2)
    return coords, torch.tensor(labels, dtype=torch.float32).reshape(len(clicks), -1)


def _boxes(gt: np.ndarray, views: list[View]) -> torch.Tensor:
    """(K, h, w) view masks -> (K, 4) (x0, y0, x1, y1) boxes in the 1024 frame."""
    boxes = []
    for mask, view in zip(gt, views):
        rows, cols = _cell_slices(view)
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


def _roi_masks(coarse: torch.Tensor, views: list[View]) -> torch.Tensor:
    """(K, 1, 4s, 4s) coarse logits -> (K, 1, s, s) refiner token masks.

    On the full canvas, the engine's ROI; on a crop, the same rule on the crop's grid: the
    positive cells' bbox, scaled 1.4x about its centre, clipped to the crop, and every token it
    meets (the whole crop when nothing is positive).
    """
    if views[0].is_full:
        return torch.from_numpy(np.concatenate([roi_from_logits(c[None].numpy()).token_mask
                                                for c in coarse.detach()]))
    per_token = LOW_RES_MASK // EMBED_GRID
    size = coarse.shape[-1] // per_token
    masks = torch.zeros(coarse.shape[0], 1, size, size)
    for k, logits in enumerate(coarse.detach()[:, 0] > 0):
        rows, cols = np.flatnonzero(logits.any(1).numpy()), np.flatnonzero(logits.any(0).numpy())
        if rows.size == 0:
            masks[k] = 1
            continue
        box = []
        for lo, hi in ((rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)):
            centre, half = (lo + hi) / 2, 0.7 * (hi - lo)
            box.append((max(0, int(np.floor((centre - half) / per_token))),
                        min(size, int(np.ceil((centre + half) / per_token)))))
        (top, bottom), (left, right) = box
        masks[k, 0, top:bottom, left:right] = 1
    return masks


def run_prompts(model: FocSAM, objects: Objects, n_steps: int, use_box: bool, refine: bool,
                rng: random.Random, sfc_inner_k: float, train: bool, every_step: bool = False,
                balance: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Play `n_steps` prompt steps on `objects`.

    Returns (loss, the logits (K, 1, 4s, 4s) of each step). In training mode the last step, the
    coarse decode of a refine step and, with `every_step`, every step carry gradients. The
    refiner (full canvas and crops) runs at step REFINE_STEP. `balance` goes to `mask_loss`.
    """
    targets, views = objects.targets, objects.views
    gt = (targets[:, 0] > 0.5).numpy().astype(np.uint8)
    clicks: list[list[Click]] = [[] for _ in views]
    box = _boxes(gt, views) if use_box else None
    if not use_box:
        _next_clicks(None, gt, clicks, rng, sfc_inner_k)
    embeddings, pe = objects.embeddings, objects.grid_pe
    current, prev, loss, history = embeddings, None, torch.zeros(()), []
    for step in range(n_steps):
        last = step == n_steps - 1
        refine_now = refine and step == REFINE_STEP
        coords, labels = _prompt(clicks, views)
        supervised = train and (last or refine_now or every_step)
        with torch.set_grad_enabled(supervised):
            if refine_now:
                coarse, token, _ = decode_batch(model, embeddings, pe, coords, labels, prev, box)
                coarse = coarse.float()
                loss = loss + COARSE_WEIGHT * mask_loss(coarse, targets, balance)
                current = model.refine_head(embeddings, token, _roi_masks(coarse, views))
            logits, _, iou_pred = decode_batch(model, current, pe, coords, labels, prev, box)
            logits, iou_pred = logits.float(), iou_pred.float()
        history.append(logits.detach())
        if supervised:
            iou = low_res_iou(logits.detach(), targets)
            loss = loss + mask_loss(logits, targets, balance) + F.mse_loss(iou_pred[:, 0], iou)
        if last:
            break
        prev = logits.detach()
        _next_clicks(prev, gt, clicks, rng, sfc_inner_k)
    return loss, history


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


def training_scene(cfg: TrainConfig, index: int) -> Scene:
    """Training scene `index` (the first of its seeds that has an object)."""
    for attempt in range(64):
        scene = make_scene(scene_seed(STREAM_TRAIN, cfg.seed, index * 64 + attempt))
        if scene.kinds:
            break
    return scene


def step_rng(cfg: TrainConfig, step: int) -> np.random.Generator:
    return np.random.default_rng([STREAM_TRAIN, cfg.seed, step, 1_000_003])


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


def balance_at(cfg: TrainConfig, step: int) -> float:
    """The BCE's class balance at `step` (`mask_loss`): 1, fading linearly to 0."""
    return max(0.0, 1 - step / cfg.balance_steps) if cfg.balance_steps else 1.0


def step_objects(model: FocSAM, cfg: TrainConfig, step: int, rng: np.random.Generator
                 ) -> Objects:
    """The step's objects: crops of `crops_per_step` scenes, or one whole canvas."""
    if step >= cfg.crop_steps or (cfg.full_every and step % cfg.full_every == cfg.full_every - 1):
        batch = prepare(training_scene(cfg, step * cfg.crops_per_step))
        order = rng.permutation(batch.targets.shape[0])
        chosen = sorted(int(i) for i in order[:cfg.objects_per_step])
        return Objects.gather(model, [batch], [View.FULL], [chosen])
    batches, views, objects = [], [], []
    for i in range(cfg.crops_per_step):
        batch = prepare(training_scene(cfg, step * cfg.crops_per_step + i))
        view, chosen = _pick_view(batch, rng, cfg.crop_tokens, cfg.objects_per_step)
        batches.append(batch)
        views.append(view)
        objects.append(chosen)
    return Objects.gather(model, batches, views, objects)


def train_step(model: FocSAM, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
               step: int) -> float:
    rng = step_rng(cfg, step)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(cfg, step)
    model.train()
    # bf16 matmuls take ~30 % off a step on this CPU (AVX512-BF16); autocast keeps the weights
    # float32 and the backward follows the forward's dtypes.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        objects = step_objects(model, cfg, step, rng)
        n_steps = _draw_steps(cfg, rng)
        use_box = bool(rng.random() < cfg.box_prob)
        refine = n_steps > REFINE_STEP and bool(rng.random() < cfg.refine_prob)
        clicker = random.Random(int(rng.integers(2**62)))
        loss, _ = run_prompts(model, objects, n_steps, use_box, refine, clicker, cfg.sfc_inner_k,
                              train=True, every_step=cfg.supervise_every_step,
                              balance=balance_at(cfg, step))
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
        on_canvas = Objects.gather(model, [batch], [View.FULL], [objects])
        for name, refine in (("sam", False), ("refine", True)):
            _, history = run_prompts(model, on_canvas, clicks, False, refine,
                                     random.Random(42), 1.0, train=False)
            per_click = results.setdefault(name, [[] for _ in range(clicks)])
            for step, logits in enumerate(history):
                per_click[step].extend(low_res_iou(logits, on_canvas.targets).tolist())
    return {name: [round(float(np.mean(v)), 4) for v in per_click]
            for name, per_click in results.items()}


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


REFINER_START_GAMMA = 0.01


def new_model(cfg: TrainConfig) -> FocSAM:
    """The tiny FocSAM at its seeded random init, with a refiner that starts near identity.

    The refiner's output replaces the embeddings the decoder reads; at a random init it would
    scramble them and the decoder would learn two inputs at once. So `embed_proj` starts as the
    identity and the window blocks' residual branches at `REFINER_START_GAMMA` (a layer scale),
    and refining starts as a no-op that training moves away from only where it helps.
    """
    model = build_model(get_variant("tiny"), seed=cfg.seed)
    refiner = model.refine_head
    with torch.no_grad():
        refiner.embed_proj.weight.copy_(torch.eye(refiner.cfg.embed_dim)[..., None, None])
        refiner.embed_proj.bias.zero_()
        for block in refiner.blocks:
            block.cls2img.gamma1.fill_(REFINER_START_GAMMA)
            block.cls2img.gamma2.fill_(REFINER_START_GAMMA)
    return make_trainable(model)


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
        flag = "--" + field.name.replace("_", "-")
        extra = {"help": field.metadata["help"] + " (default: %(default)s)"}
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=field.default, **extra)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default, **extra)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    train(cfg, args.out, args.resume)


if __name__ == "__main__":
    main()
