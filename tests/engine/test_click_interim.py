"""The refine step's interim (coarse) result: what it is, and that it changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.image_io import load_image

CLICKS = [(170, 125, True), (60, 55, False), (120, 90, True)]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return FocSAMEngine.open(tiny_model_dir, threads=2)


@pytest.fixture(scope="module")
def encoded(engine):
    return engine.open_image(load_image(Path(__file__).parents[2] / "examples" / "shapes.png"))


def test_interim_comes_once_at_the_refine_step_and_is_the_coarse_decode(engine, encoded):
    interims: list[tuple[int, object]] = []
    session = ClickSession(engine, encoded)
    with_callback = [session.click(x, y, p, on_interim=lambda r, i=i: interims.append((i, r)))
                     for i, (x, y, p) in enumerate(CLICKS)]
    assert [i for i, _ in interims] == [1]
    interim = interims[0][1]
    assert not interim.decoded_on_refined and interim.roi == with_callback[1].roi
    # The coarse decode of step 1 is what plain SAM predicts at its second click.
    sam = ClickSession(engine, encoded, refine_at=None)
    sam_results = [sam.click(x, y, p) for x, y, p in CLICKS[:2]]
    np.testing.assert_array_equal(interim.mask, sam_results[1].mask)
    assert interim.iou_prediction == sam_results[1].iou_prediction
    # The callback changes nothing: the same clicks without it give the same states.
    plain = ClickSession(engine, encoded)
    for a, (x, y, p) in zip(with_callback, CLICKS):
        b = plain.click(x, y, p)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)
        assert a.decoded_on_refined == b.decoded_on_refined
