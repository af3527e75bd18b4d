"""The trainer: batched decoding equals the exported path, a resumed run equals an
uninterrupted one (seeded per step), and the mask loss's class balance fades as configured."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from focsam_onnx.config import get_variant
from focsam_onnx.models.focsam import build_model
from focsam_onnx.training.batch import View, decode_batch, encode_view
from focsam_onnx.training.train import TrainConfig, balance_at, mask_loss, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_batched_decode_is_the_models_decode():
    model = build_model(get_variant("tiny"), seed=3)
    embeddings = torch.randn(1, 256, 64, 64)
    coords, labels = torch.rand(2, 3, 2) * 1024, torch.tensor([[1.0, 0, 1], [1, 1, 0]])
    prev = torch.randn(2, 1, 256, 256)
    with torch.no_grad():
        pe = model.neck.grid_pe()
        logits, token, iou = decode_batch(model, embeddings, pe, coords, labels, prev)
        for k in range(2):
            one = model.decode(embeddings, coords[k:k + 1], labels[k:k + 1], prev[k:k + 1])
            torch.testing.assert_close(logits[k:k + 1], one[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(token[k:k + 1], one[1], atol=1e-5, rtol=0)
            torch.testing.assert_close(iou[k:k + 1], one[2], atol=1e-5, rtol=0)


def test_the_full_view_is_the_encoder():
    model = build_model(get_variant("tiny"), seed=3)
    image = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        crop = encode_view(model, image, View(8, 16, 16))
        assert crop.shape == (1, 256, 16, 16)
        torch.testing.assert_close(encode_view(model, image, View()), model.encode(image))


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    cfg = TrainConfig(steps=2, crop_steps=2, crop_tokens=16, objects_per_step=1,
                      max_extra_steps=1, checkpoint_every=1, val_every=100, val_scenes=0,
                      warmup_steps=1, threads=1)
    whole = train(cfg, tmp_path / "whole").state_dict()
    train(dataclasses.replace(cfg, steps=1, crop_steps=1), tmp_path / "split")
    resumed = train(cfg, tmp_path / "split", resume=True).state_dict()
    for name, value in whole.items():
        assert torch.equal(value, resumed[name]), name


def test_the_bce_class_balance_fades_to_plain_bce():
    cfg = TrainConfig(balance_steps=100)
    assert [balance_at(cfg, s) for s in (0, 50, 100, 400)] == [1.0, 0.5, 0.0, 0.0]
    assert balance_at(TrainConfig(balance_steps=0), 400) == 1.0
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, generator=generator)
    target = torch.zeros(2, 1, 16, 16)
    target[0, :, :4, :4], target[1, :, 2:10, 2:14] = 1, 1  # 1/16 and 3/8 of the view
    prob, dims = logits.sigmoid(), (1, 2, 3)
    dice = 1 - (2 * (prob * target).sum(dims) + 1) / (prob.sum(dims) + target.sum(dims) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    share = target.mean(dims, keepdim=True)
    halves = torch.where(target > 0.5, 0.5 / share, 0.5 / (1 - share))  # each class half the BCE
    torch.testing.assert_close(mask_loss(logits, target, 0.0),
                               (bce.mean(dims) + dice).mean())
    torch.testing.assert_close(mask_loss(logits, target, 1.0),
                               ((halves * bce).mean(dims) + dice).mean())
    torch.testing.assert_close(mask_loss(logits, target, 0.5),
                               ((halves.sqrt() * bce).mean(dims) + dice).mean())
