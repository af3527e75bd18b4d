"""Stateless replay through the prefix cache: exactly a ClickSession's results, cold or warm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.prompts import Box, Click
from focsam_onnx.engine.replay_cache import MAX_PROMPTS, ReplayCache
from focsam_onnx.errors import InvalidInput

IMAGE = Path(__file__).resolve().parents[2] / "examples" / "shapes.png"
BOX = Box(40.0, 30.0, 230.0, 200.0)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return FocSAMEngine.open(tiny_model_dir, threads=2)


@pytest.fixture(scope="module")
def image(engine):
    return engine.open_image(IMAGE)


def clicks(n: int, seed: int = 0) -> list[Click]:
    rng = np.random.default_rng(seed)
    return [Click(int(rng.integers(320)), int(rng.integers(240)), i % 3 != 1) for i in range(n)]


def session_results(engine, image, prompts) -> list:
    session = ClickSession(engine, image)
    return [session.add(p) for p in prompts]


def same(a, b) -> bool:
    return (np.array_equal(a.low_res_logits, b.low_res_logits)
            and a.iou_prediction == b.iou_prediction
            and a.decoded_on_refined == b.decoded_on_refined
            and np.array_equal(a.mask, b.mask))


@pytest.mark.parametrize("with_box", [False, True])
def test_equals_a_session_for_every_prompt_count_cold_and_warm(engine, image, with_box):
    prompts = ([BOX] if with_box else []) + clicks(20)
    expected = session_results(engine, image, prompts)
    for n in (1, 2, 3, 5, 20):
        cold = ReplayCache().replay(engine, image, prompts[:n])
        assert cold.cached_steps == 0 and same(cold.result, expected[n - 1]), n
    cache = ReplayCache()
    for n in range(1, len(prompts) + 1):  # a growing list, as Label Studio sends it
        warm = cache.replay(engine, image, prompts[:n])
        assert warm.cached_steps == n - 1 and same(warm.result, expected[n - 1]), n
    again = cache.replay(engine, image, prompts[:5])
    assert again.cached_steps == 5 and same(again.result, expected[4])


def test_a_changed_prompt_branches_from_the_common_prefix(engine, image):
    cache, prompts = ReplayCache(), clicks(6, seed=1)
    cache.replay(engine, image, prompts)
    other = [*prompts[:3], Click(5, 5, False)]
    branched = cache.replay(engine, image, other)
    assert branched.cached_steps == 3
    assert same(branched.result, session_results(engine, image, other)[-1])


def test_the_refine_step_and_model_are_part_of_the_key(engine, image):
    cache, prompts = ReplayCache(), clicks(3, seed=2)
    focsam = cache.replay(engine, image, prompts)
    sam = cache.replay(engine, image, prompts, refine_at=None)
    assert sam.cached_steps == 0 and not sam.result.decoded_on_refined
    assert focsam.result.decoded_on_refined


def test_the_budget_bounds_the_bytes_and_counts_shared_embeddings_once(engine, image):
    prompts = clicks(8, seed=3)
    unbounded = ReplayCache()
    unbounded.replay(engine, image, prompts)
    logits, embeddings = 256 * 256 * 4, 256 * 64 * 64 * 4
    assert len(unbounded) == 8 and unbounded.nbytes == 8 * logits + embeddings
    small = ReplayCache(budget_bytes=embeddings + 3 * logits)
    small.replay(engine, image, prompts)
    assert small.nbytes == embeddings + 3 * logits and len(small) == 3  # the newest three
    assert same(small.replay(engine, image, prompts).result,
                session_results(engine, image, prompts)[-1])


@pytest.mark.parametrize("prompts", [[], [Click(320, 0)], [Click(0, -1)],
                                     [Box(float("nan"), 0, 10, 10)], [Box(10, 10, 5, 50)],
                                     [Click(1, 1)] * (MAX_PROMPTS + 1)])
def test_bad_prompts_are_refused_with_a_message(engine, image, prompts):
    with pytest.raises(InvalidInput) as err:
        ReplayCache().replay(engine, image, prompts)
    assert str(err.value)
