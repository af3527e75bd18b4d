"""A cost proxy for SimpleClick-ViT-H: a plain ViT-H backbone at 448x448, exported to ONNX.

SimpleClick runs its whole backbone on every click (the click maps enter with the image), so one
backbone forward is a lower bound on its per-click cost: its click-map patch embedding,
segmentation head and zoom-in are left out. The backbone is ViT-H as SimpleClick configures it:
embed 1280, depth 32, 16 heads, patch 16, MLP ratio 4, absolute position embeddings and global
attention over all (448 / 16)^2 = 784 tokens. Weights are random: latency does not depend on them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

PROXY_FILE = "simpleclick_proxy.onnx"
META_FILE = "meta.json"
INPUT_NAME = "image"
OUTPUT_NAME = "features"


@dataclass(frozen=True)
class ProxyConfig:
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    patch_size: int = 16
    image_size: int = 448
    mlp_ratio: float = 4.0

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def reduced(self) -> bool:
        """True when this is smaller than SimpleClick-ViT-H (e.g. for smoke tests)."""
        return self != ProxyConfig()


class _Block(nn.Module):
    """Pre-norm transformer block with global multi-head self-attention."""

    def __init__(self, cfg: ProxyConfig) -> None:
        super().__init__()
        dim, hidden = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
        self.num_heads = cfg.num_heads
        self.scale = (dim // cfg.num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (1, N, C) -> (1, N, C)."""
        qkv = self.qkv(self.norm1(x)).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (1, heads, N, head_dim)
        attn = (torch.matmul(q * self.scale, k.transpose(-2, -1))).softmax(dim=-1)
        x = x + self.proj(torch.matmul(attn, v).transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))


class PlainViT(nn.Module):
    """image (1, 3, S, S) -> features (1, N, C), N = (S / patch)^2, C = embed_dim."""

    def __init__(self, cfg: ProxyConfig) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.tokens, cfg.embed_dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def build_proxy(cfg: ProxyConfig, seed: int = 0) -> PlainViT:
    """A float32 PlainViT in eval mode, random weights from `seed` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PlainViT(cfg)
    return model.float().eval()


def _meta(cfg: ProxyConfig, seed: int) -> dict:
    return {"config": asdict(cfg), "seed": seed, "opset": 18}


def cached_proxy(out_dir: Path, cfg: ProxyConfig, seed: int = 0) -> Path | None:
    """The proxy graph in `out_dir` if a completed export of exactly `cfg` and `seed` is there."""
    meta_path = Path(out_dir) / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if {k: meta.get(k) for k in ("config", "seed", "opset")} != _meta(cfg, seed):
        return None
    for name, size in meta.get("files", {}).items():
        path = Path(out_dir) / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return Path(out_dir) / PROXY_FILE


def export_proxy(out_dir: str | Path, cfg: ProxyConfig, seed: int = 0) -> Path:
    """Export the proxy to `out_dir/simpleclick_proxy.onnx` (+ .data), reusing a valid cache.

    ViT-H has 632M parameters (2.5 GB), over protobuf's 2 GB limit, so the weights go to an
    external data file; meta.json is written last and marks the export complete.
    """
    out_dir = Path(out_dir)
    cached = cached_proxy(out_dir, cfg, seed)
    if cached is not None:
        return cached
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    model = build_proxy(cfg, seed)
    image = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    path = out_dir / PROXY_FILE
    log.info("exporting the SimpleClick proxy (depth %d) to %s", cfg.depth, path)
    with torch.no_grad():
        torch.onnx.export(model, (image,), str(path), dynamo=True, external_data=True,
                          opset_version=18, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], verbose=False)
    files = {p.name: p.stat().st_size for p in (path, path.with_name(path.name + ".data"))
             if p.exists()}
    meta = {**_meta(cfg, seed), "files": files,
            "parameters": sum(p.numel() for p in model.parameters())}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def proxy_parameters(out_dir: str | Path) -> int | None:
    """Parameter count recorded by `export_proxy`, or None."""
    try:
        return int(json.loads((Path(out_dir) / META_FILE).read_text())["parameters"])
    except (OSError, ValueError, KeyError):
        return None
