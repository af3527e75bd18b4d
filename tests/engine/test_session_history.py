"""A click session's history: flat in memory, and undo exact however far back it goes."""

from __future__ import annotations

import hashlib
import weakref

import numpy as np
import pytest

from focsam_onnx.bench.system_info import current_rss_mb
from focsam_onnx.engine.click_session import KEEP, ClickSession
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.postprocess import logits_to_mask


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return FocSAMEngine.open(tiny_model_dir, threads=2)


def scripted_clicks(n: int, height: int, width: int, seed: int = 0):
    """n clicks at random pixels, alternating positive and negative (the first positive)."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(width)), int(rng.integers(height)), i % 2 == 0) for i in range(n)]


def digest(result) -> tuple[str, float, bool]:
    return hashlib.sha256(result.low_res_logits.tobytes()).hexdigest(), result.iou_prediction, \
        result.decoded_on_refined


def test_history_holds_logits_not_masks_and_undo_replays_them_exactly(engine):
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), np.uint8)
    encoded = engine.open_image(image)
    clicks = scripted_clicks(2 * KEEP + 6, 120, 160)
    session, seen, alive, masks = ClickSession(engine, encoded), [], [], []
    for x, y, positive in clicks:
        result = session.click(x, y, positive)
        assert np.array_equal(result.mask, logits_to_mask(result.low_res_logits,
                                                          encoded.geometry))
        assert result.mask is result.mask  # computed once while current
        seen.append(digest(result))
        alive.append(weakref.ref(result.low_res_logits))
        masks.append(weakref.ref(result.mask))
    del result
    # The newest KEEP steps and every KEEP-th before them hold their logits, nothing else does;
    # only the current result holds a mask.
    held = [i + 1 for i, ref in enumerate(alive) if ref() is not None]
    assert held == [KEEP, *range(len(clicks) - KEEP + 1, len(clicks) + 1)]
    assert [i + 1 for i, ref in enumerate(masks) if ref() is not None] == [len(clicks)]
    for step in range(len(clicks) - 1, 0, -1):  # undo to the first click, through replays
        restored = session.undo()
        assert restored is session.result and digest(restored) == seen[step - 1], step
        assert (restored.roi is not None) == (step == 2)  # the refine step keeps its ROI
    assert session.steps == 1 and len(session.clicks) == 1
    assert not session.result.decoded_on_refined
    first = weakref.ref(restored.low_res_logits)
    del restored
    session.reset()
    assert session.result is None and session.clicks == () and first() is None
    assert all(ref() is None for ref in alive)


def test_undo_into_a_dropped_refine_step_restores_its_roi(engine):
    image = np.random.default_rng(2).integers(0, 256, (96, 128, 3), np.uint8)
    session = ClickSession(engine, engine.open_image(image))
    results = [session.click(x, y, p) for x, y, p in scripted_clicks(KEEP + 3, 96, 128, seed=3)]
    for _ in range(KEEP + 1):
        session.undo()
    again = session.result  # step 2 again: its result was dropped and replayed
    assert again is not results[1] and again.roi == results[1].roi and again.decoded_on_refined
    assert np.array_equal(again.low_res_logits, results[1].low_res_logits)
    # the refined embeddings survived: the next click decodes on them without refining again
    nxt = session.click(*scripted_clicks(KEEP + 3, 96, 128, seed=3)[2])
    assert nxt.roi is None and np.array_equal(nxt.low_res_logits, results[2].low_res_logits)


def test_a_failed_step_leaves_the_session_as_it_was(engine):
    image = np.random.default_rng(6).integers(0, 256, (96, 128, 3), np.uint8)
    session = ClickSession(engine, engine.open_image(image))
    first = session.click(50, 50, True)

    def front_end_gone(_):
        raise RuntimeError("the front end went away")

    with pytest.raises(RuntimeError, match="went away"):
        session.click(20, 20, False, on_interim=front_end_gone)  # fails inside the refine step
    assert session.steps == 1 and len(session.clicks) == 1 and session.result is first
    assert session.click(20, 20, False).roi is not None  # the retried step refines afresh

@pytest.mark.slow
@pytest.mark.parametrize("height, width", [(480, 640), (3000, 4000)], ids=["640x480", "12MP"])
def test_a_1000_click_session_stays_flat_in_memory(engine, height, width):
    """RSS after 1,000 clicks within 30 MB of RSS after 100, the mask taken at every click."""
    image = np.random.default_rng(4).integers(0, 256, (height, width, 3), np.uint8)
    session = ClickSession(engine, engine.open_image(image))
    for i, (x, y, positive) in enumerate(scripted_clicks(1000, height, width, seed=5), 1):
        mask = session.click(x, y, positive).mask
        if i == 100:
            at_100 = current_rss_mb()
    at_1000 = current_rss_mb()
    print(f"{width}x{height}: RSS {at_100:.0f} MB after 100 clicks, {at_1000:.0f} MB after 1,000")
    assert mask.shape == (height, width) and session.steps == 1000
    assert at_1000 <= at_100 + 30, (at_100, at_1000)
