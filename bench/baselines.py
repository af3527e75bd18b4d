"""Baselines the benchmark runs beside our graphs: the official SAM ONNX decoder and torch eager.

`export_sam_onnx_decoder` exports the official `segment-anything` package's `SamOnnxModel` the
way its `scripts/export_onnx_model.py` does (TorchScript-based exporter, opset 17, dynamic point
count, outputs masks / iou_predictions / low_res_masks). Note what that graph includes beyond
ours: with `return_single_mask=False` it returns all 4 masks, and it upsamples them inside the
graph to 1024x1024 and then to `orig_im_size` (ours returns mask 0's 256x256 logits and the
engine post-processes outside the graph).

Tracing quirk (torch 2.13): `SamOnnxModel.mask_postprocessing` crops with
`int(prepadded_size[i])`, which the TorchScript tracer records as a constant, so the crop is baked
from the example `orig_im_size`. `masks` are therefore exact only for images whose longest-side
resize matches the example's (same aspect ratio); `low_res_masks` and `iou_predictions` are exact
for any size. The example size is a parameter here (the official script hard-codes 1500x2250).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from focsam_onnx.models.segment_anything_compat import import_segment_anything

SAM_DECODER_FILE = "sam_decoder.onnx"
SAM_OPSET = 17  # what segment-anything's export script uses by default
SAM_INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input",
                   "has_mask_input", "orig_im_size")
SAM_OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")


def build_random_sam(seed: int = 0):
    """An official `segment_anything.modeling.Sam` with random weights from `seed`.

    Prompt encoder and mask decoder are SAM's (identical for every ViT size); the image encoder
    is a one-block ViT because the decoder export never runs it and only reads `img_size`.
    """
    import_segment_anything()
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=64, depth=1,
                                          num_heads=2, out_chans=256, use_rel_pos=True,
                                          window_size=14, global_attn_indexes=(0,)),
            prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                         input_image_size=(1024, 1024), mask_in_chans=16),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                              num_heads=8),
                transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        )
    return sam.float().eval()


def export_sam_onnx_decoder(sam, path: str | Path, return_single_mask: bool = False,
                            opset: int = SAM_OPSET,
                            orig_hw: tuple[int, int] = (1024, 1024)) -> Path:
    """Export `sam`'s prompt encoder + mask decoder as segment-anything's own ONNX graph.

    Inputs: image_embeddings (1, 256, 64, 64); point_coords (1, N, 2) float32 (x, y) in the
    1024 frame, the padding point included; point_labels (1, N) float32 (1, 0, -1 padding, 2/3
    box corners); mask_input (1, 1, 256, 256); has_mask_input (1,); orig_im_size (2,) float32
    (H, W). Outputs: masks (1, M, H, W) logits at orig_im_size, iou_predictions (1, M),
    low_res_masks (1, M, 256, 256); M = 4, or 1 with `return_single_mask`. `orig_hw` (H, W)
    is the example orig_im_size the graph's crop is traced with (see the module docstring).
    """
    import_segment_anything()
    from segment_anything.utils.onnx import SamOnnxModel

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_model = SamOnnxModel(sam, return_single_mask=return_single_mask).eval()
    gen = torch.Generator().manual_seed(0)
    dummy = (
        torch.randn(1, 256, 64, 64, generator=gen),
        torch.randint(0, 1024, (1, 5, 2), generator=gen).float(),
        torch.randint(0, 4, (1, 5), generator=gen).float(),
        torch.randn(1, 1, 256, 256, generator=gen),
        torch.tensor([1.0]),
        torch.tensor([float(orig_hw[0]), float(orig_hw[1])]),
    )
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    with warnings.catch_warnings():
        # The TorchScript exporter warns about traced Python ints and about being legacy.
        warnings.simplefilter("ignore")
        onnx_model(*dummy)
        torch.onnx.export(onnx_model, dummy, str(path), export_params=True, verbose=False,
                          opset_version=opset, do_constant_folding=True,
                          input_names=list(SAM_INPUT_NAMES), output_names=list(SAM_OUTPUT_NAMES),
                          dynamic_axes=dynamic_axes, dynamo=False)
    return path


def cached_sam_onnx_decoder(out_dir: str | Path, seed: int = 0,
                            orig_hw: tuple[int, int] = (1024, 1024),
                            return_single_mask: bool = False) -> Path:
    """`out_dir/sam_decoder.onnx` of `build_random_sam(seed)`, exported on first use."""
    out_dir = Path(out_dir)
    path, meta_path = out_dir / SAM_DECODER_FILE, out_dir / "meta.json"
    meta = {"seed": seed, "opset": SAM_OPSET, "return_single_mask": return_single_mask,
            "orig_hw": list(orig_hw)}
    try:
        recorded = json.loads(meta_path.read_text())
        if (path.is_file() and recorded.get("size") == path.stat().st_size
                and {k: recorded.get(k) for k in meta} == meta):
            return path
    except (OSError, ValueError):
        pass
    meta_path.unlink(missing_ok=True)
    export_sam_onnx_decoder(build_random_sam(seed), path, return_single_mask, orig_hw=orig_hw)
    meta_path.write_text(json.dumps({**meta, "size": path.stat().st_size}) + "\n")
    return path


def sam_decoder_feeds(decoder_feeds: dict[str, np.ndarray],
                      orig_hw: tuple[int, int] = (1024, 1024)) -> dict[str, np.ndarray]:
    """Our decoder's feeds (padding point already appended) -> the SAM ONNX decoder's.

    The first five inputs share names and meaning; SAM's graph adds `orig_im_size` (H, W).
    """
    feeds = {name: decoder_feeds[name] for name in SAM_INPUT_NAMES[:5]}
    feeds["orig_im_size"] = np.array(orig_hw, dtype=np.float32)
    return feeds
