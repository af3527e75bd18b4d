"""Our decoder graph against segment-anything's own ONNX decoder, for the same weights."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from focsam_onnx.bench.baselines import export_sam_onnx_decoder, sam_decoder_feeds
from focsam_onnx.engine.graph_spec import DECODER
from focsam_onnx.export.exporter import export_graph
from focsam_onnx.export.wrappers import graph_exports
from focsam_onnx.models.checkpoint import load_checkpoint
from focsam_onnx.models.segment_anything_compat import import_segment_anything

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """(our decoder session, segment-anything's decoder session) for one random vit_b."""
    out = tmp_path_factory.mktemp("peer_decoder")
    sam_module = import_segment_anything()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        sam = sam_module.sam_model_registry["vit_b"]().eval()
        with torch.no_grad():  # make zero-initialised tensors (LN biases, ...) matter too
            for p in sam.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    torch.save(sam.state_dict(), out / "sam_vit_b.pth")
    model, info = load_checkpoint(out / "sam_vit_b.pth")
    assert info.kind == "official_sam" and info.config.variant == "vit_b"
    (decoder,) = [g for g in graph_exports(model) if g.spec.name == "decoder"]
    ours = export_graph(decoder, out, opset=19, simplify=False)
    theirs = export_sam_onnx_decoder(sam, out / "sam_decoder.onnx")
    def session(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    return session(out / ours.files[0]), session(theirs)


def _prompt(rng: np.random.Generator, clicks: int, box: bool,
            pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Clicks, then (optionally) a box's corners labelled 2 / 3, then (optionally) padding."""
    coords = [rng.uniform(0, 1023, (clicks, 2))]
    labels = [rng.integers(0, 2, clicks).astype(np.float64)]
    if box:
        coords.append(np.sort(rng.uniform(0, 1023, (2, 2)), axis=0))
        labels.append(np.array([2.0, 3.0]))
    if pad:
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1.0]))
    return (np.concatenate(coords)[None].astype(np.float32),
            np.concatenate(labels)[None].astype(np.float32))


@pytest.mark.parametrize("clicks, box, pad, has_mask", [
    (1, False, True, 0.0), (3, False, True, 1.0), (9, False, True, 1.0),
    (0, True, False, 0.0),  # a box alone, as segment-anything's predictor sends it
    (2, True, False, 1.0),  # clicks + box
    (1, True, True, 0.0),  # box + padding point, as X-AnyLabeling and samexporter send it
])
def test_same_mask_logits_as_segment_anything(decoders, clicks, box, pad, has_mask):
    ours, theirs = decoders
    rng = np.random.default_rng(clicks + 10 * box + 100 * pad)
    coords, labels = _prompt(rng, clicks, box, pad)
    feeds = dict(zip(DECODER.input_names, (
        rng.normal(size=(1, 256, 64, 64)).astype(np.float32), coords, labels,
        rng.normal(size=(1, 1, 256, 256)).astype(np.float32) * 3,
        np.array([has_mask], np.float32))))
    low_res, _, iou = ours.run(None, feeds)
    reference = dict(zip(("masks", "iou_predictions", "low_res_masks"),
                         theirs.run(None, sam_decoder_feeds(feeds))))
    assert reference["low_res_masks"].shape == (1, 4, 256, 256)
    assert np.max(np.abs(low_res - reference["low_res_masks"][:, :1])) <= 1e-4
    assert np.max(np.abs(iou - reference["iou_predictions"])) <= 1e-4
    assert np.abs(low_res).max() > 1e-2  # a non-trivial prediction was compared
