"""A tiny Depth Anything 3 built from the `depth-anything-3` package's own classes (DINOv2 with
RoPE, QK-norm and alternating attention, the DualDPT head, the camera encoder and decoder) at
small dimensions, saved as the hub's DA3 checkpoints are (config.json + model.safetensors),
with its architecture in the package's YAML format beside them (export.da3.ARCHITECTURE_FILE)."""

from __future__ import annotations

from pathlib import Path

from depth_anything_3.model.dinov2.dinov2 import DinoV2
from depth_anything_3.model.dinov2.vision_transformer import DinoVisionTransformer
from torch import nn

from export import da3

ARCHITECTURE = """\
__object__:
  path: depth_anything_3.model.da3
  name: DepthAnything3Net
  args: as_params

net:
  __object__:
    path: tests.tiny_da3
    name: TinyDinoV2
    args: as_params
  embed_dim: 32
  depth: 4
  num_heads: 2
  out_layers: [0, 1, 2, 3]
  alt_start: 2
  qknorm_start: 2
  rope_start: 2
  cat_token: True

head:
  __object__:
    path: depth_anything_3.model.dualdpt
    name: DualDPT
    args: as_params
  dim_in: 64
  output_dim: 2
  features: 16
  out_channels: [8, 16, 32, 32]

cam_enc:
  __object__:
    path: depth_anything_3.model.cam_enc
    name: CameraEnc
    args: as_params
  dim_out: 32
  num_heads: 2

cam_dec:
  __object__:
    path: depth_anything_3.model.cam_dec
    name: CameraDec
    args: as_params
  dim_in: 64
"""


class TinyDinoV2(DinoV2):
    """The package's DinoV2 wrapper around its DinoVisionTransformer, at a chosen size (the
    package's own picks among ViT-S/B/L/G only)."""

    def __init__(
        self, embed_dim, depth, num_heads, out_layers, alt_start, qknorm_start, rope_start, cat_token=True
    ):
        nn.Module.__init__(self)
        self.name = "vits"
        self.out_layers = out_layers
        self.alt_start, self.qknorm_start, self.rope_start = alt_start, qknorm_start, rope_start
        self.cat_token = cat_token
        self.pretrained = DinoVisionTransformer(
            img_size=518,
            patch_size=14,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4,
            ffn_layer="mlp",
            alt_start=alt_start,
            qknorm_start=qknorm_start,
            rope_start=rope_start,
            cat_token=cat_token,
        )


def save_tiny(directory: Path, seed: int = 0) -> Path:
    """Build, shape (export.da3.give_structure) and save a tiny DA3 checkpoint directory."""
    directory.mkdir(parents=True, exist_ok=True)
    architecture = directory / da3.ARCHITECTURE_FILE
    architecture.write_text(ARCHITECTURE)
    network = da3.random_network(architecture, seed)
    da3.save_checkpoint(network, directory, preset="tiny")
    return directory
