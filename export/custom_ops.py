"""ONNX translations of the model's custom torch ops, for the dynamo exporter."""

from __future__ import annotations

import torch
from onnxscript import opset19 as op

import focsam_onnx.models.deform_conv  # noqa: F401  (registers focsam::modulated_deform_conv3x3)

DEFORM_CONV_OPSET = 19  # ONNX DeformConv first appears in opset 19


def deform_conv(x, offset, mask, weight):
    """ONNX DeformConv with the DCNv2 layout the torch op uses: (dy, dx) per tap, no bias."""
    return op.DeformConv(x, weight, offset, None, mask, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[1, 1], dilations=[1, 1], group=1, offset_group=1)


TRANSLATIONS = {torch.ops.focsam.modulated_deform_conv3x3.default: deform_conv}
