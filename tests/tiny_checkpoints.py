"""Tiny random-weight checkpoints of each transformers depth family, with their image processors
set away from their defaults, saved with ``save_pretrained`` (tests of ``export --checkpoint``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    BeitConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    DepthProConfig,
    DepthProForDepthEstimation,
    Dinov2Config,
    DPTConfig,
    DPTForDepthEstimation,
    DPTImageProcessor,
    GLPNConfig,
    GLPNForDepthEstimation,
    GLPNImageProcessor,
    PreTrainedModel,
)

from export.architectures import calibration_batch, give_head_structure


def _dinov2(patch: int = 14, image_size: int = 70) -> Dinov2Config:
    return Dinov2Config(  # type: ignore[call-arg]
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=image_size,
        patch_size=patch,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )


def depth_anything(kind: str = "relative", max_depth: int = 20) -> PreTrainedModel:
    config = DepthAnythingConfig(
        backbone_config=_dinov2(),
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        depth_estimation_type=kind,
        max_depth=max_depth,
    )
    return DepthAnythingForDepthEstimation(config)


def dpt_vit() -> PreTrainedModel:
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=96,
        patch_size=16,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
    )
    return DPTForDepthEstimation(config)


def dpt_beit() -> PreTrainedModel:
    backbone = BeitConfig(  # type: ignore[call-arg]
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        use_relative_position_bias=True,
        use_mask_token=False,
        reshape_hidden_states=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = DPTConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
    )
    return DPTForDepthEstimation(config)


def dpt_dinov2() -> PreTrainedModel:
    config = DPTConfig(
        backbone_config=_dinov2(patch=14, image_size=56),
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        reassemble_factors=[4, 2, 1, 0.5],
    )
    return DPTForDepthEstimation(config)


def glpn() -> PreTrainedModel:
    config = GLPNConfig(
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 2, 2],
        decoder_hidden_size=16,
        max_depth=8,
    )
    return GLPNForDepthEstimation(config)


def _small_dinov2() -> dict:
    return {
        "model_type": "dinov2",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 64,
        "patch_size": 16,
    }


DEPTH_PRO_SIDE = 256  # the network's input: its patch size (64) over the smallest ratio (0.25)
TINY_FOV_DEG = 58.0  # where the tiny FOV head is shaped around


def depth_pro() -> PreTrainedModel:
    config = DepthProConfig(
        patch_size=64,
        fusion_hidden_size=16,
        intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[16, 16],
        scaled_images_ratios=[0.25, 0.5, 1],
        scaled_images_overlap_ratios=[0.0, 0.5, 0.25],
        scaled_images_feature_dims=[32, 32, 16],
        use_fov_model=True,
        image_model_config=_small_dinov2(),
        patch_model_config=_small_dinov2(),
        fov_model_config=_small_dinov2(),
    )
    return DepthProForDepthEstimation(config)


# DepthProImageProcessor imports torchvision (not installed here): its config written as it saves it
DEPTH_PRO_PROCESSOR = {
    "image_processor_type": "DepthProImageProcessor",
    "do_resize": True,
    "size": {"height": DEPTH_PRO_SIDE, "width": DEPTH_PRO_SIDE},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48, 0.45, 0.41],
    "image_std": [0.52, 0.5, 0.49],
}


class _WrittenProcessor:
    """A processor config written as JSON (for a processor that cannot be built here)."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def save_pretrained(self, directory: Path) -> None:
        (Path(directory) / "preprocessor_config.json").write_text(json.dumps(self.config, indent=2))


# family -> (model builder, image processor with settings away from the defaults)
FAMILIES: dict[str, tuple[Callable[[], PreTrainedModel], Callable[[], object]]] = {
    "depth_anything": (
        depth_anything,
        lambda: DPTImageProcessor(
            size={"height": 70, "width": 70},
            keep_aspect_ratio=True,
            ensure_multiple_of=14,
            resample=3,
            image_mean=[0.45, 0.46, 0.40],
            image_std=[0.22, 0.23, 0.24],
        ),
    ),
    "depth_anything_metric": (
        lambda: depth_anything("metric", 20),
        lambda: DPTImageProcessor(
            size={"height": 84, "width": 84}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=2
        ),
    ),
    "dpt_vit": (
        dpt_vit,
        lambda: DPTImageProcessor(
            size={"height": 80, "width": 80},
            resample=2,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
            do_pad=True,
            size_divisor=48,
        ),
    ),
    "dpt_beit": (
        dpt_beit,
        lambda: DPTImageProcessor(
            size={"height": 64, "width": 64}, resample=1, image_mean=[0.4] * 3, image_std=[0.6] * 3
        ),
    ),
    "dpt_dinov2": (
        dpt_dinov2,
        lambda: DPTImageProcessor(
            size={"height": 56, "width": 56},
            keep_aspect_ratio=False,
            ensure_multiple_of=14,
            do_pad=True,
            size_divisor=28,
            resample=3,
        ),
    ),
    "glpn": (glpn, lambda: GLPNImageProcessor(size_divisor=64, resample=3)),
    "depth_pro": (depth_pro, lambda: _WrittenProcessor(DEPTH_PRO_PROCESSOR)),
}


def save_tiny(family: str, directory: Path, seed: int = 0) -> Path:
    """A tiny checkpoint of ``family`` with structure in its depth, saved as a hub checkpoint is."""
    build, processor = FAMILIES[family]
    torch.manual_seed(seed)
    model = build().eval()
    shift = 0.0 if "metric" in family or family == "glpn" else 3.0
    if family == "depth_pro":  # its metres are 1 / its output: kept well away from 0 (no 1e4 m pixels)
        shift = 8.0
    side = DEPTH_PRO_SIDE if family == "depth_pro" else 64
    give_head_structure(model, calibration_batch(side), seed, shift)
    if family == "depth_pro":  # its field of view near TINY_FOV_DEG, a little different per image
        with torch.no_grad():
            last = model.fov_model.head.layers[-1]  # type: ignore[union-attr, index]
            last.weight.mul_(0.05)
            last.bias.fill_(TINY_FOV_DEG)
    model.save_pretrained(directory)  # safetensors
    processor().save_pretrained(directory)  # type: ignore[attr-defined]
    return directory
