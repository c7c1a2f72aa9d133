"""Model architectures built offline from transformers configs.

Real users load real checkpoints (export.checkpoints). These builders exist for two honest
purposes: the explicit ``--random-weights`` smoke mode (full-size architectures, meaningless
output) and the tests (tiny versions of the same architectures, loaded back through the real
loading code after ``save_pretrained``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import (
    BeitConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTConfig,
    DPTForDepthEstimation,
    PreTrainedModel,
)

from depthstream.contract import DEPTH_ANYTHING_V2_SMALL, MIDAS_DPT_BEIT_BASE_384, DepthKind, ModelSpec


def _depth_anything(
    spec: ModelSpec, hidden: int, layers: int, heads: int, neck: list[int], fusion: int, head: int
):
    step = layers // 4
    backbone = Dinov2Config(  # type: ignore[call-arg]  # backbone kwargs: transformers takes them through **kwargs
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        image_size=518,
        patch_size=14,
        out_indices=[step, 2 * step, 3 * step, 4 * step],
        reshape_hidden_states=False,
    )
    return DepthAnythingForDepthEstimation(
        DepthAnythingConfig(
            backbone_config=backbone,
            reassemble_hidden_size=hidden,
            neck_hidden_sizes=neck,
            fusion_hidden_size=fusion,
            head_hidden_size=head,
            # a metric head ends in sigmoid x max_depth (metres); a relative one in ReLU
            depth_estimation_type=str(spec.depth),
            max_depth=int(spec.max_depth_m or 1),
        )
    )


def _dpt_beit(hidden: int, layers: int, heads: int, neck: list[int], fusion: int):
    step = layers // 4
    backbone = BeitConfig(  # type: ignore[call-arg]  # as above
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        image_size=384,
        patch_size=16,
        use_relative_position_bias=True,
        use_mask_token=False,
        reshape_hidden_states=False,
        out_features=[f"stage{i * step}" for i in range(1, 5)],
    )
    return DPTForDepthEstimation(
        DPTConfig(
            backbone_config=backbone,
            neck_hidden_sizes=neck,
            fusion_hidden_size=fusion,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
        )
    )


def build_full_size(spec: ModelSpec) -> PreTrainedModel:
    """The real architecture with random weights (Depth-Anything-V2-Small: ViT-S/14 DINOv2)."""
    if spec.model_type == DEPTH_ANYTHING_V2_SMALL.model_type:
        return _depth_anything(spec, 384, 12, 6, [48, 96, 192, 384], fusion=64, head=32)
    if spec.model_type == MIDAS_DPT_BEIT_BASE_384.model_type:
        return _dpt_beit(768, 12, 12, [96, 192, 384, 768], fusion=256)
    raise ValueError(f"no architecture for {spec.name}")


def build_tiny(spec: ModelSpec) -> PreTrainedModel:
    """A tiny version of the same architecture, for tests (seconds to export on 2 cores)."""
    if spec.model_type == DEPTH_ANYTHING_V2_SMALL.model_type:
        return _depth_anything(spec, 32, 4, 2, [8, 16, 32, 32], fusion=16, head=8)
    if spec.model_type == MIDAS_DPT_BEIT_BASE_384.model_type:
        return _dpt_beit(32, 4, 2, [8, 16, 32, 32], fusion=16)
    raise ValueError(f"no architecture for {spec.name}")


def _last_conv(model: nn.Module) -> nn.Conv2d:
    head = model.get_submodule("head")
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]


@torch.no_grad()
def give_head_structure(
    model: PreTrainedModel, calibration: torch.Tensor, seed: int = 0, shift: float = 3.0
) -> None:
    """Rescale the head's last convolution so a random model's depth has visible structure.

    Randomly initialized heads give near-constant output, mostly clipped by the final ReLU.
    We project the features onto a random direction, standardize that projection on a
    calibration batch and shift it by ``shift``, so outputs vary across the image: positive
    for a ReLU head, 0 for a metric head's sigmoid (kept out of its flat, saturated ends).
    """
    conv = _last_conv(model)
    captured: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        model(pixel_values=calibration)
    finally:
        handle.remove()
    features = captured[0]
    direction = torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(seed))
    projection = nn.functional.conv2d(features, direction)
    std = projection.std().clamp_min(1e-12)
    conv.weight.copy_(direction / std)
    assert conv.bias is not None  # the heads' last convolutions have one
    conv.bias.fill_(float(-projection.mean() / std) + shift)


def calibration_batch(size: int = 384) -> torch.Tensor:
    """A deterministic, structured calibration input (gradients and a disc), normalized-ish."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    disc = ((xs - 0.6) ** 2 + (ys - 0.4) ** 2 < 0.05).astype(np.float32)
    channels = np.stack([xs, ys, disc]) * 2 - 1
    return torch.from_numpy(channels)[None]


def random_weights_model(spec: ModelSpec, tiny: bool = False, seed: int = 0) -> PreTrainedModel:
    """A seeded random-weight model whose depth has structure (smoke mode and tests)."""
    torch.manual_seed(seed)
    model = (build_tiny if tiny else build_full_size)(spec).eval()
    shift = 0.0 if spec.depth is DepthKind.METRIC else 3.0
    give_head_structure(model, calibration_batch(), seed, shift)
    return model
