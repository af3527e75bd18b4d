"""The composite FocSAM model (`backbone`, `neck`, `decode_head`, `refine_head`) and its builder.

Submodule names are upstream's, so `state_dict()` keys equal the FocSAM manifest
(`focsam_vit_h_state_dict.tsv`). `refine_head` is None for plain SAM. The methods here are the
torch reference for the three ONNX graphs: `encode`, `decode` (prompt encoder + mask decoder)
and `refine`.
"""

from __future__ import annotations

import torch
from torch import nn

from focsam_onnx.config import FocSAMConfig, RefinerConfig
from focsam_onnx.models.image_encoder import ImageEncoderViT
from focsam_onnx.models.mask_decoder import MaskDecoder
from focsam_onnx.models.prompt_encoder import PromptEncoder, sparse_points


def _build_refiner(cfg: RefinerConfig) -> nn.Module:
    # Imported here so that plain SAM (no refiner) never needs the refiner module.
    from focsam_onnx.models.refiner import FocusRefiner

    return FocusRefiner(cfg)


def _check_points(coords: torch.Tensor, labels: torch.Tensor) -> None:
    if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[2] != 2:
        raise ValueError(f"coords must be (1, N, 2) (x, y), got {tuple(coords.shape)}")
    if tuple(labels.shape) != tuple(coords.shape[:2]):
        raise ValueError(f"labels must be (1, N) = {tuple(coords.shape[:2])}, "
                         f"got {tuple(labels.shape)}")


class FocSAM(nn.Module):
    """SAM ViT + prompt encoder + mask decoder (+ focus refiner unless `cfg.refiner is None`)."""

    def __init__(self, cfg: FocSAMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ImageEncoderViT(cfg.encoder)
        self.neck = PromptEncoder()
        self.decode_head = MaskDecoder()
        self.refine_head = None if cfg.refiner is None else _build_refiner(cfg.refiner)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image: (1, 3, 1024, 1024) normalised, channel order B, G, R -> (1, 256, 64, 64)."""
        return self.backbone(image)

    def prompt(self, coords: torch.Tensor, labels: torch.Tensor,
               mask_input: torch.Tensor | None = None,
               box: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings, upstream semantics (box corners or the padding point appended here).

        coords: (1, N, 2) float32, (x, y) in the 1024 frame without +0.5 (N may be 0 with a
        box); labels: (1, N) float32 1/0; mask_input: (1, 1, 256, 256) previous low-res logits
        or None (first click); box: (1, 4) float32 (x0, y0, x1, y1) in the 1024 frame or None.
        Returns sparse (1, N+2 with a box, else N+1, 256) and dense (1, 256, 64, 64).
        """
        _check_points(coords, labels)
        sparse = self.neck.embed_points(*sparse_points(coords, labels, box))
        if mask_input is None:
            return sparse, self.neck.no_mask_dense()
        has_mask = torch.ones(1, dtype=mask_input.dtype, device=mask_input.device)
        return sparse, self.neck.embed_mask(mask_input, has_mask)

    def decode(self, embeddings: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               mask_input: torch.Tensor | None = None, box: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One click's prediction ("single mask with token"); arguments as in `prompt`.

        embeddings: (1, 256, 64, 64). Returns (low_res_masks (1, 1, 256, 256) logits of mask 0,
        mask_token (1, 1, 256), iou_predictions (1, 4)).
        """
        sparse, dense = self.prompt(coords, labels, mask_input, box)
        return self.decode_head.forward_single(embeddings, self.neck.grid_pe(), sparse, dense)

    def decode_all(self, embeddings: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
                   mask_input: torch.Tensor | None = None, box: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 masks; arguments as in `decode`.

        Returns (masks (1, 4, 256, 256), iou_predictions (1, 4), mask_tokens (1, 4, 256)).
        """
        sparse, dense = self.prompt(coords, labels, mask_input, box)
        return self.decode_head(embeddings, self.neck.grid_pe(), sparse, dense)

    def refine(self, embeddings: torch.Tensor, mask_token: torch.Tensor,
               roi_mask: torch.Tensor) -> torch.Tensor:
        """Focus-refined embeddings (spec §5).

        embeddings: (1, 256, 64, 64) original E0; mask_token: (1, 1, 256) from `decode` with E0;
        roi_mask: (1, 1, 64, 64) 0/1 tokens of the expanded ROI of that decode's coarse logits
        (the numpy geometry `focsam_onnx.engine.roi.roi_from_logits` gives it: the torch model
        does not own it, so that models/ imports nothing from the engine).
        Returns (1, 256, 64, 64).
        """
        if self.refine_head is None:
            raise ValueError(f"variant {self.cfg.variant!r} is plain SAM: it has no refiner")
        return self.refine_head(embeddings, mask_token, roi_mask)


def build_model(cfg: FocSAMConfig, seed: int | None = None,
                device: str | torch.device = "cpu") -> FocSAM:
    """A float32 FocSAM in eval mode with random weights.

    `seed` makes the initialisation reproducible without touching the global RNG state;
    `device="meta"` allocates nothing (for manifests and for loading with `assign=True`).
    """
    device = torch.device(device)
    if device.type == "meta":
        with torch.device("meta"):
            model = FocSAM(cfg)
    elif seed is None:
        model = FocSAM(cfg).to(device)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FocSAM(cfg)
        model = model.to(device)
    return model.float().eval()
