"""The benchmark's stage groups: each function runs in its own process (see `isolated.py`),
loads only the graph it times, and returns {stage name: timing entry}.

A group takes the run's `Settings` (and any baseline graph paths); `latency.STAGE_GROUPS` lists
the groups a run measures and where their entries go in the report.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focsam_onnx.bench import system_info
from focsam_onnx.bench.cases import (
    DECODER_CLICKS,
    REFINE_CLICK_WINDOWS,
    REFINER_WINDOWS,
    SCENE_HW,
    SESSION_CLICKS,
    decoder_feeds,
    decoder_key,
    refiner_feeds,
    refiner_key,
    synthetic_scene,
)
from focsam_onnx.bench.measure import interleaved, measure, median_ratio, summarize
from focsam_onnx.engine.graph_spec import DECODER, ENCODER, REFINER


@dataclass(frozen=True)
class Settings:
    """What every stage process needs to know (picklable)."""

    model_dir: str
    variant: str
    threads: int
    warmup: int
    repeats: int
    seed: int = 0


def _graph_session(s: Settings, spec):
    """Our graph's session, as the engine makes it (options, thread count, no spinning)."""
    from focsam_onnx.engine.sessions import graph_session

    return graph_session(Path(s.model_dir) / spec.filename, spec, s.threads)


def baseline_session(path: str, threads: int):
    """A baseline graph gets the options our decoder and refiner get."""
    import onnxruntime as ort

    from focsam_onnx.engine.sessions import session_options

    return ort.InferenceSession(path, session_options(threads),
                                providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- our graphs and the engine


def encoder_stages(s: Settings) -> dict:
    """preprocess (numpy, the synthetic image) and encoder (the graph alone)."""
    from focsam_onnx.engine.preprocess import preprocess

    image, _ = synthetic_scene()
    out = {"preprocess": measure(lambda: preprocess(image), s.warmup, s.repeats)}
    session = _graph_session(s, ENCODER)
    feeds = {ENCODER.input_names[0]: preprocess(image)[0]}
    out["encoder"] = measure(lambda: session.run(None, feeds), s.warmup, s.repeats)
    out["encoder"]["process_peak_mb"] = system_info.process_peak_mb()
    return out


def encoder_precision_stages(s: Settings) -> dict:
    """Every encoder precision the export offers, timed in alternation on the same input (a
    busy machine slows all alike); each one's peak memory in a fresh process; its quality-gate
    figures from the manifest next to them."""
    import dataclasses

    from focsam_onnx.bench.encoder_precision import peak_mb
    from focsam_onnx.engine.encoder_runtime import open_encoder
    from focsam_onnx.engine.loaded_model import read_manifest

    model_dir = Path(s.model_dir)
    offered = read_manifest(model_dir).encoder_precisions
    encoders = {p: open_encoder(model_dir, p, s.threads) for p in offered}
    x = np.random.default_rng(s.seed).standard_normal(ENCODER.inputs[0].shape, np.float32)
    times = interleaved([lambda e=e: e.run(x) for e in encoders.values()], s.warmup, s.repeats)
    fp32 = times[list(offered).index("fp32")]
    out = {}
    for (precision, entry), seconds in zip(offered.items(), times, strict=True):
        gate = None if entry.gate is None else dataclasses.asdict(entry.gate)
        out[f"encoder_{precision}"] = {
            **summarize(seconds), "peak_mb": peak_mb(model_dir, precision, s.threads),
            "runtime": entry.runtime, "interleaved_vs_fp32": median_ratio(seconds, fp32),
            "gate": gate}
    return out


def decoder_stages(s: Settings) -> dict:
    session, rng = _graph_session(s, DECODER), np.random.default_rng(s.seed)
    out = {}
    for n in DECODER_CLICKS:
        feeds = decoder_feeds(n, rng)
        out[decoder_key("decoder", n)] = measure(lambda f=feeds: session.run(None, f),
                                                 s.warmup, s.repeats)
    return out


def refiner_stages(s: Settings) -> dict:
    from focsam_onnx.engine.roi import selected_windows

    session, rng = _graph_session(s, REFINER), np.random.default_rng(s.seed)
    out = {}
    for k in REFINER_WINDOWS:
        feeds = refiner_feeds(k, rng)
        entry = measure(lambda f=feeds: session.run(None, f), s.warmup, s.repeats)
        mask = feeds[REFINER.input_names[2]]
        entry["windows_plain"] = int(selected_windows(mask).size)
        entry["windows_shifted"] = int(selected_windows(mask, shift=8).size)
        out[refiner_key("refiner", k)] = entry
    return out


def session_stages(s: Settings) -> dict:
    """Cold open (encoder), reopen from the disk cache, and SESSION_CLICKS-click sessions."""
    from focsam_onnx.engine.cache import EmbeddingCache
    from focsam_onnx.engine.focsam_engine import FocSAMEngine

    image, gt = synthetic_scene()
    cache_dir = Path(tempfile.mkdtemp(prefix="focsam-bench-emb-"))
    try:
        engine = FocSAMEngine.open(s.model_dir, s.threads, cache_dir=cache_dir)
        encoded = None

        def cold_open() -> None:
            nonlocal encoded
            encoded = engine.open_image(image)

        # Once: a second cold open would need another image or an emptied cache.
        out = {"session_open_image": measure(cold_open, 0, 1)}
        fresh = []

        def reopen() -> None:
            fresh.append(FocSAMEngine(engine.model, EmbeddingCache(1, cache_dir)).open_image(image))

        out["session_reopen_disk_cache"] = measure(reopen, s.warmup, s.repeats)
        if not all(e.from_cache for e in fresh):
            raise RuntimeError("reopening the image missed the disk cache")
        out["session_interaction_per_click"] = _interaction(engine, encoded, gt, s)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return out


STATELESS_STEPS = (3, 10, 20)  # the k-th prompt of a growing list (after the refine step)


def stateless_stages(s: Settings) -> dict:
    """The k-th click through the stateless replay cache (its k - 1 prefix cached), interleaved
    with the same click on a session in the same state; and a cold list of SESSION_CLICKS."""
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.engine.focsam_engine import FocSAMEngine
    from focsam_onnx.engine.prompts import Click
    from focsam_onnx.engine.replay_cache import ReplayCache

    image, _ = synthetic_scene()
    engine = FocSAMEngine.open(s.model_dir, s.threads)
    encoded = engine.open_image(image)
    rng = np.random.default_rng(s.seed)
    height, width = image.shape[:2]
    prompts = [Click(int(rng.integers(width)), int(rng.integers(height)), i % 3 != 1)
               for i in range(SESSION_CLICKS)]
    out = {}
    for k in STATELESS_STEPS:
        cache = ReplayCache()
        cache.replay(engine, encoded, prompts[:k - 1])  # the prefix, as earlier requests left it
        before = ClickSession(engine, encoded)
        before.replay(prompts[:k - 1])
        state = before.state()

        def stateless(k=k, cache=cache) -> None:
            cache.replay(engine, encoded, prompts[:k])
            cache.discard(engine, encoded, prompts[:k])

        def session(k=k, state=state) -> None:
            ClickSession.resume(engine, encoded, state).add(prompts[k - 1])

        system_info.reset_peak_rss()
        times = interleaved([stateless, session], s.warmup, s.repeats)
        out[f"stateless_click_{k}"] = _pair_entry(*times, "session")
    out["stateless_cold_list"] = measure(lambda: ReplayCache().replay(engine, encoded, prompts),
                                         s.warmup, s.repeats)
    out["stateless_cold_list"]["prompts"] = len(prompts)
    return out


def run_session(engine, encoded, gt: np.ndarray, seed: int) -> list[dict]:
    """One object, SESSION_CLICKS simulated clicks; returns each step's timings (ms). Only the
    steps are timed (the click simulator's distance transforms stand in for a user): the
    session's own wall time of each step, plus the post-processing the first `.mask` costs."""
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.evaluation.evaluate import simulate_clicks

    steps_ms: list[dict] = []

    def timed(click, result) -> None:
        start = time.perf_counter()
        result.mask  # noqa: B018 (computed on access and cached: the post-processing)
        post = (time.perf_counter() - start) * 1000.0
        timings = result.timings_ms
        steps_ms.append({**timings, "postprocess": post, "total": timings["total"] + post,
                         "wall": timings["step"] + post})

    simulate_clicks(ClickSession(engine, encoded), gt, random.Random(seed), SESSION_CLICKS,
                    observer=timed)
    return steps_ms


def _breakdown(steps: list[dict]) -> dict:
    """Median ms per click of each part of a step; the refiner's parts on the step that ran it."""
    def median(key: str) -> float:
        return float(np.median([st[key] for st in steps if key in st]))

    # The wall time encloses the timed parts, so this is >= 0; the floor keeps a tie positive.
    overhead = [st["wall"] - st["total"] for st in steps]
    return {"decode": median("decode"), "postprocess": median("postprocess"),
            "coarse_decode_once": median("coarse_decode"), "refine_once": median("refine"),
            "other": max(float(np.median(overhead)), 1e-6), "step_wall": median("wall")}


def _interaction(engine, encoded, gt: np.ndarray, s: Settings) -> dict:
    system_info.reset_peak_rss()
    rss_at_start = system_info.current_rss_mb()
    for i in range(s.warmup):
        run_session(engine, encoded, gt, seed=1000 + i)
    per_click, steps = [], []
    for i in range(s.repeats):
        session_steps = run_session(engine, encoded, gt, seed=i)
        per_click.append(sum(st["wall"] for st in session_steps) / 1000.0 / SESSION_CLICKS)
        steps += session_steps
    return {**summarize(per_click), "peak_mb": system_info.peak_rss_mb(),
            "rss_at_start_mb": rss_at_start, "clicks_per_session": SESSION_CLICKS,
            "breakdown_ms": _breakdown(steps)}


def _pair_entry(times: list[float], other: list[float], other_name: str) -> dict:
    """Timing entry of `times`, with the interleaved contender's p50 and the median ratio."""
    return {**summarize(times), "peak_mb": system_info.peak_rss_mb(),
            f"{other_name}_p50_ms": summarize(other)["p50_ms"],
            f"interleaved_vs_{other_name}": median_ratio(times, other)}


def refine_click_stages(s: Settings, reference: str) -> dict:
    """The refine click (coarse decode + refiner + decode on the refined embeddings) with our
    graphs and, interleaved with it, the same click with today's graphs before their exact
    rewrites (the decoder and refiner as written in models/, in `reference`)."""
    from focsam_onnx.engine.sessions import graph_session

    ours = _graph_session(s, DECODER), _graph_session(s, REFINER)
    before = tuple(graph_session(Path(reference) / spec.filename, spec, s.threads)
                   for spec in (DECODER, REFINER))
    rng, out = np.random.default_rng(s.seed), {}
    embeddings_name = DECODER.input_names[0]
    for k in REFINE_CLICK_WINDOWS:
        decoder_in, refiner_in = decoder_feeds(5, rng), refiner_feeds(k, rng)

        def click(graphs, d=decoder_in, r=refiner_in) -> None:
            decoder, refiner = graphs
            decoder.run(None, d)
            (refined,) = refiner.run(None, r)
            decoder.run(None, {**d, embeddings_name: refined})

        system_info.reset_peak_rss()
        times = interleaved([lambda: click(ours), lambda: click(before)], s.warmup, s.repeats)
        out[refiner_key("refine_click", k)] = _pair_entry(*times, "reference")
    return out


def decoder_to_image_stages(s: Settings, sam_single_mask: str) -> dict:
    """Like for like with segment-anything's single-mask ONNX decoder, whose graph upsamples to
    `orig_im_size`: our decoder plus its upsampling to the same image size (SCENE_HW), the two
    timed in alternation on the same feeds."""
    from focsam_onnx.bench.baselines import sam_decoder_feeds
    from focsam_onnx.engine.postprocess import logits_to_mask
    from focsam_onnx.engine.preprocess import ImageGeometry

    ours = _graph_session(s, DECODER)
    theirs = baseline_session(sam_single_mask, s.threads)
    geometry = ImageGeometry.from_size(*SCENE_HW)
    rng, out = np.random.default_rng(s.seed), {}
    for n in DECODER_CLICKS:
        feeds = decoder_feeds(n, rng)
        sam_feeds = sam_decoder_feeds(feeds, SCENE_HW)

        def to_image(f=feeds) -> np.ndarray:
            return logits_to_mask(ours.run(None, f)[0], geometry)

        system_info.reset_peak_rss()
        times = interleaved([to_image, lambda f=sam_feeds: theirs.run(None, f)], s.warmup,
                            2 * s.repeats)
        out[decoder_key("decoder_to_image", n)] = _pair_entry(*times, "sam_single_mask")
    return out


# ---------------------------------------------------------------- baselines


def sam_decoder_stages(s: Settings, sam_decoder: str) -> dict:
    """The official SAM ONNX decoder on the same inputs as ours, orig_im_size (1024, 1024)."""
    from focsam_onnx.bench.baselines import sam_decoder_feeds

    session, rng, out = baseline_session(sam_decoder, s.threads), np.random.default_rng(s.seed), {}
    for n in DECODER_CLICKS:
        feeds = sam_decoder_feeds(decoder_feeds(n, rng))
        entry = measure(lambda f=feeds: session.run(None, f), s.warmup, s.repeats)
        entry["note"] = "4 masks, upsampled in-graph to 1024x1024 (orig_im_size)"
        out[decoder_key("sam_onnx_decoder", n)] = entry
    for n, ratio in _interleaved_decoder_ratios(s, sam_decoder).items():
        out[decoder_key("sam_onnx_decoder", n)]["interleaved_ours_over_this"] = ratio
    return out


def _interleaved_decoder_ratios(s: Settings, sam_decoder: str) -> dict[int, float]:
    """Median over pairs of (our decoder's time / segment-anything's), the two run back to back."""
    from focsam_onnx.bench.baselines import sam_decoder_feeds

    ours = _graph_session(s, DECODER)
    theirs = baseline_session(sam_decoder, s.threads)
    rng, ratios = np.random.default_rng(s.seed), {}
    for n in DECODER_CLICKS:
        feeds = decoder_feeds(n, rng)
        sam_feeds = sam_decoder_feeds(feeds)
        times = interleaved([lambda f=feeds: ours.run(None, f),
                             lambda f=sam_feeds: theirs.run(None, f)], s.warmup, 2 * s.repeats)
        ratios[n] = median_ratio(*times)
    return ratios


def torch_stages(s: Settings) -> dict:
    """Our torch modules in eager mode (the export wrappers, weights of `s.seed`)."""
    import torch

    from focsam_onnx.config import get_variant
    from focsam_onnx.export.wrappers import DecoderGraph, EncoderGraph, RefinerGraph
    from focsam_onnx.models.focsam import build_model

    torch.set_num_threads(s.threads)
    model = build_model(get_variant(s.variant), seed=s.seed)
    out, rng = {}, np.random.default_rng(s.seed)
    with torch.inference_mode():
        out["torch_encoder"] = _torch_encoder_stage(EncoderGraph(model), s)
        del model.backbone  # the decoder and refiner never need the ViT
        decoder, refiner = DecoderGraph(model), RefinerGraph(model.refine_head)
        for n in DECODER_CLICKS:
            args = [torch.from_numpy(v) for v in decoder_feeds(n, rng).values()]
            out[decoder_key("torch_decoder", n)] = measure(lambda a=args: decoder(*a),
                                                           s.warmup, s.repeats)
        for k in REFINER_WINDOWS:
            args = [torch.from_numpy(v) for v in refiner_feeds(k, rng).values()]
            out[refiner_key("torch_refiner", k)] = measure(lambda a=args: refiner(*a),
                                                           s.warmup, s.repeats)
    return out


def _torch_encoder_stage(encoder, s: Settings) -> dict:
    import torch

    from focsam_onnx.engine.preprocess import preprocess

    image = torch.from_numpy(preprocess(synthetic_scene()[0])[0])
    entry = measure(lambda: encoder(image), s.warmup, s.repeats)
    return {**entry, "process_peak_mb": system_info.process_peak_mb()}


def proxy_stages(s: Settings, proxy_path: str, depth: int) -> dict:
    """The SimpleClick ViT-H proxy in onnxruntime, once per click."""
    from focsam_onnx.bench.simpleclick_proxy import INPUT_NAME, ProxyConfig, proxy_parameters

    cfg = ProxyConfig(depth=depth)
    session = baseline_session(proxy_path, s.threads)
    image = np.random.default_rng(s.seed).standard_normal(
        (1, 3, cfg.image_size, cfg.image_size), np.float32)
    entry = measure(lambda: session.run(None, {INPUT_NAME: image}), s.warmup, s.repeats)
    entry.update({"process_peak_mb": system_info.process_peak_mb(), "reduced": cfg.reduced,
                  "depth": cfg.depth, "embed_dim": cfg.embed_dim, "input_size": cfg.image_size,
                  "tokens": cfg.tokens, "parameters": proxy_parameters(Path(proxy_path).parent)})
    entry["note"] = ("plain ViT backbone, global attention, once per click: a lower bound on "
                     "SimpleClick's per-click cost (click-map embedding, head and zoom-in omitted)")
    if cfg.reduced:
        entry["note"] += f"; REDUCED to depth {cfg.depth} (--quick), not ViT-H's 32"
    return {"simpleclick_vit_h_proxy": entry}
