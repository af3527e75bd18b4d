"""The X-AnyLabeling custom-model config written beside the SAM-compatible pair.

X-AnyLabeling's `segment_anything` model type reads `type`, `name`, `display_name`,
`encoder_model_path`, `decoder_model_path` (required), `input_size`, `max_width` and
`max_height`; relative model paths are resolved against the config file's folder, so the
folder can be moved as a whole. Its SAM ONNX client resizes every image into a 684 x 1024
(H x W) canvas and sends that canvas's size as `orig_im_size`.
"""

from __future__ import annotations

from pathlib import Path

from focsam_onnx.engine.graph_spec import SAM_DECODER, SAM_ENCODER

CONFIG_FILE = "xanylabeling.yaml"


def write_xanylabeling_config(out_dir: Path, variant: str, kind: str) -> Path:
    """Write `out_dir/xanylabeling.yaml` for the pair in `out_dir`; returns its path."""
    title = "FocSAM" if kind == "focsam" else "SAM"
    lines = {
        "type": "segment_anything",
        "name": f"focsam_onnx_{kind}_{variant}",
        "display_name": f"{title} {variant} (focsam-onnx)",
        "encoder_model_path": SAM_ENCODER.filename,
        "decoder_model_path": SAM_DECODER.filename,
        "input_size": 1024,
        "max_width": 1024,
        "max_height": 682,
    }
    path = Path(out_dir) / CONFIG_FILE
    path.write_text("".join(f"{key}: {value}\n" for key, value in lines.items()))
    return path
