"""Clicks in parallel: the click pool runs sessions at once, each in its order, and a parallel
click gives the very bytes of the same click run alone (real tiny export, real ORT sessions)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from focsam_onnx.engine.prompts import Box, Click
from focsam_onnx.serve.click_pool import ClickPool, Lane
from focsam_onnx.serve.labeller import Labeller, LabellerSettings

IMAGES = ("a_shapes.png", "b_flipped.png", "c_rotated.jpg")


def test_a_lane_keeps_its_order_while_lanes_run_at_once():
    pool = ClickPool(4)
    try:
        both_running = threading.Barrier(2, timeout=30)  # only two lanes at once get past it
        meeting = [pool.submit(Lane(), both_running.wait) for _ in range(2)]
        assert sorted(f.result(timeout=60) for f in meeting) == [0, 1]

        order: list[tuple[int, int]] = []
        lanes = [Lane() for _ in range(3)]
        futures = [pool.submit(lanes[i % 3], lambda i=i: (time.sleep(0.002 * (i % 4)),
                                                          order.append((i % 3, i)))[1])
                   for i in range(30)]
        for future in futures:
            future.result(timeout=60)
        for lane in range(3):
            mine = [i for k, i in order if k == lane]
            assert mine == sorted(mine) and len(mine) == 10
        assert all(lane.waiting == 0 for lane in lanes)
    finally:
        pool.close()


def test_an_error_reaches_its_caller_and_the_lane_goes_on():
    pool = ClickPool(2)
    try:
        lane = Lane()
        failing = pool.submit(lane, lambda: 1 / 0)
        after = pool.submit(lane, lambda: "next")
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=30)
        assert after.result(timeout=30) == "next"
    finally:
        pool.close()


def plans() -> list[tuple[str, list]]:
    """Six objects on three images: clicks, a box, the refine step, a negative click."""
    rng = np.random.default_rng(5)
    out = []
    for k in range(6):
        prompts: list = [Box(20.0, 15.0, 220.0, 180.0)] if k % 3 == 0 else []
        prompts += [Click(int(rng.integers(0, 200)), int(rng.integers(0, 170)), i % 3 != 1)
                    for i in range(5)]
        out.append((IMAGES[k % 3], prompts))
    return out


@pytest.fixture()
def labeller(tiny_model_dir, images_dir, tmp_path):
    # Two intra-op threads shared by four clicks at once: runs overlap inside one ORT session.
    labeller = Labeller(LabellerSettings(model=tiny_model_dir, images=images_dir,
                                         out=tmp_path / "labels", threads=2, prefetch=0,
                                         click_workers=4))
    labeller.start()
    try:
        for name in IMAGES:
            assert labeller.open(name).done.wait(300)
        yield labeller
    finally:
        labeller.close()


def steps_of(labeller: Labeller, parallel: bool) -> list[list[tuple[bytes, bytes]]]:
    """Every step's low-res logits and mask bytes, per object, the objects' prompts sent all
    at once (each in its session's order) or one after another."""
    work = plans()
    sessions = [labeller.new_session(name) for name, _ in work]
    steps: list[list[tuple[bytes, bytes]]] = [[] for _ in work]

    def step(k: int, prompt) -> None:
        result = labeller.add(sessions[k], prompt)
        steps[k].append((result.low_res_logits.tobytes(), np.packbits(result.mask).tobytes()))

    futures = []
    for k, (_, prompts) in enumerate(work):
        for prompt in prompts:
            futures.append(labeller.clicks.submit(sessions[k].lane, step, k, prompt))
            if not parallel:
                futures[-1].result(timeout=120)
    for future in futures:
        future.result(timeout=120)
    for live, (_, prompts) in zip(sessions, work):
        assert list(live.session.prompts) == [p for p in prompts]  # in the order sent
    return steps


def test_parallel_clicks_give_the_bytes_of_sequential_ones(labeller):
    sequential = steps_of(labeller, parallel=False)
    parallel = steps_of(labeller, parallel=True)
    assert [len(s) for s in parallel] == [len(p) for _, p in plans()]
    for k, (one_by_one, at_once) in enumerate(zip(sequential, parallel)):
        for step, (expected, got) in enumerate(zip(one_by_one, at_once)):
            assert got == expected, f"object {k}, step {step} differs"


def test_two_sessions_are_inside_the_engine_at_once(labeller):
    """Both refine steps wait for each other mid-click: with one lock around all clicks (as
    before the pool) the second could never start and the barrier would break."""
    sessions = [labeller.new_session(name) for name in IMAGES[:2]]
    for live in sessions:
        labeller.add(live, Click(100, 80))
    both_inside = threading.Barrier(2, timeout=60)
    futures = [labeller.clicks.submit(live.lane, labeller.add, live, Click(150, 120, False),
                                      lambda result: both_inside.wait())
               for live in sessions]
    assert all(f.result(timeout=120).refiner_ran for f in futures)


def test_click_workers_below_one_are_refused_before_loading(tmp_path):
    from typer.testing import CliRunner

    from focsam_onnx.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nowhere"),
                                      "--out", str(tmp_path / "labels"), "--click-workers", "0"])
    assert result.exit_code == 2
    assert "--click-workers must be >= 1, got 0" in result.output
