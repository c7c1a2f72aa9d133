"""The exported graph: raw uint8 RGB in, depth at the input's size out, preprocessing fused in.

The maths follows the official pipelines (see depthstream.contract): resize with bicubic (as OpenCV's
INTER_CUBIC), normalize, run the network, resize the depth back with the model's own mode.
Sizes are computed from the input's shape with tensor ops, so the exported ONNX stays correct
at every input size instead of the one it was traced at.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx.operators import shape_as_tensor

from depthstream.contract import Interpolation, ModelSpec, ResizeRule
from export import pil_resize
from export.fused import FusedGraph
from export.resize import bicubic


class FusedDepthModel(FusedGraph):
    """Wraps a transformers depth model: ``IMAGE`` uint8 [N, H, W, 3] -> ``DEPTH`` fp32 [N, H, W]."""

    def network_size(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[int, int]:
        """The contract's Resize.network_size, in tensor ops on the traced input's shape."""
        resize = self.spec.resize
        if resize.rule is ResizeRule.STRETCH:
            return resize.size, resize.width or resize.size
        # float64 like the reference's numpy maths, so rounding ties break the same way
        hw = shape_as_tensor(image)[1:3].to(torch.float64)
        m = resize.multiple_of
        if resize.rule is ResizeRule.DIVISOR:
            scale = torch.clamp(resize.size / torch.max(hw), max=1.0)
            new_hw = torch.clamp(torch.floor(scale * hw / m) * m, min=m).to(torch.int64)
            return new_hw[0], new_hw[1]
        scales = resize.size / hw
        if resize.rule is ResizeRule.CLOSEST:  # the scale nearer to 1, for both sides
            # one-element slices, not 0-d tensors: the exporter casts 0-d float64 to float32
            gap = torch.abs(scales - 1.0)
            scale = torch.where(gap[1:2] < gap[0:1], scales[1:2], scales[0:1])
            low = float(m)
        else:
            scale = torch.max(scales)
            low = float(resize.size)  # the reference rounds up instead; same result here
        new_hw = torch.round(scale * hw / m) * m
        # never above the contract's ceiling: what bounds the cost of any one image
        new_hw = torch.clamp(new_hw, min=low, max=resize.max_side).to(torch.int64)
        return new_hw[0], new_hw[1]

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        rule = self.spec.resize
        pixels = image.permute(0, 3, 1, 2).to(torch.float32)
        if not rule.pil:  # the official pipelines: OpenCV's cubic on the normalized image
            pixels = pixels * self.scale + self.offset
            return resize(pixels, self.network_size(image), rule.interpolation, align_corners=False)
        # the transformers processors: Pillow on the uint8 image, then rescale, normalize, pad
        height, width = self.network_size(image)
        pixels = pil_resize.resize(pixels, height, width, rule.interpolation)
        pixels = pixels * self.scale + self.offset
        if rule.pad_to > 1:
            pixels = centre_pad(pixels, rule.pad_to)
        return pixels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(image)
        depth = self.network(pixel_values=pixels).predicted_depth  # [N, h, w]
        out = self.spec.output_resize
        size = (image.shape[1], image.shape[2])
        depth = resize(depth.unsqueeze(1), size, out.interpolation, out.align_corners)
        # a reshape, not squeeze(1): the exporter turns that into an If that copies the whole
        # input-sized output (75 ms for a 4096x1638 input)
        return depth.reshape(depth.shape[0], depth.shape[2], depth.shape[3])


def centre_pad(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zeros around the image up to a multiple of ``multiple`` (DPT's pad_image: the odd pixel
    after the image)."""
    hw = shape_as_tensor(pixels)[2:4]
    extra = (torch.ceil(hw.to(torch.float64) / multiple) * multiple).to(torch.int64) - hw
    before = extra // 2
    after = extra - before
    # 0-d tensors, not ints: the traced graph pads each input size as it comes
    pads = [before[1], after[1], before[0], after[0]]
    return F.pad(pixels, pads)  # type: ignore[arg-type]


def resize(x: torch.Tensor, size, interpolation: Interpolation, align_corners: bool) -> torch.Tensor:
    """Bicubic through export.resize (same numbers, much faster in ONNX Runtime); else PyTorch's."""
    if interpolation == Interpolation.BICUBIC and not align_corners:
        return bicubic(x, *size)
    return F.interpolate(x, size=size, mode=interpolation.value, align_corners=align_corners)


def _trace_friendly_depth_anything_head(self, hidden_states, patch_height, patch_width):
    """DepthAnythingDepthEstimationHead.forward without ``int()`` on traced sizes.

    transformers' version calls ``int(patch_height * patch_size)``, which the TorchScript ONNX
    exporter freezes to the traced size: exact there, 20-30% off at every other size.
    """
    hidden_states = hidden_states[self.head_in_index]
    predicted_depth = self.conv1(hidden_states)
    predicted_depth = nn.functional.interpolate(
        predicted_depth,
        (patch_height * self.patch_size, patch_width * self.patch_size),
        mode="bilinear",
        align_corners=True,
    )
    predicted_depth = self.conv2(predicted_depth)
    predicted_depth = self.activation1(predicted_depth)
    predicted_depth = self.conv3(predicted_depth)
    predicted_depth = self.activation2(predicted_depth) * self.max_depth
    return predicted_depth.squeeze(dim=1)


def _fast_dinov2_position_encoding(self, embeddings, height, width):
    """Dinov2Embeddings.interpolate_pos_encoding with export.resize.bicubic: the same numbers
    (PyTorch bicubic, align_corners=False), without ONNX Runtime's slow cubic Resize on 384
    channels every frame."""
    class_pos_embed = self.position_embeddings[:, :1]
    patch_pos_embed = self.position_embeddings[:, 1:]
    dim = embeddings.shape[-1]
    patch_height, patch_width = self.patch_embeddings.patch_size
    side = round(self.patch_embeddings.num_patches**0.5)  # a Python int: constant in the graph
    grid = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2).to(torch.float32)
    grid = bicubic(grid, height // patch_height, width // patch_width).to(patch_pos_embed.dtype)
    return torch.cat((class_pos_embed, grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


class FusedDepthPro(FusedDepthModel):
    """Depth Pro: ``DEPTH`` in metres and ``INTRINSICS`` from its field-of-view head, as its
    processor's post_process_depth_estimation makes them: the focal length of the input's width,
    ``f = 0.5 W / tan(fov / 2)``; its inverse depth scaled by ``W / f``, resized back
    (bilinear), inverted within [1e-4, 1e4]; the principal point at the centre."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        out = self.network(pixel_values=self.preprocess(image))
        hw = shape_as_tensor(image)[1:3].to(torch.float32)
        fov = out.field_of_view.reshape(-1) * (math.pi / 180)  # degrees to radians: [N]
        focal = 0.5 * hw[1] / torch.tan(0.5 * fov)
        inverse = out.predicted_depth * (hw[1] / focal)[:, None, None]
        size = (image.shape[1], image.shape[2])
        inverse = F.interpolate(inverse.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
        depth = 1.0 / torch.clamp(inverse, min=1e-4, max=1e4)
        depth = depth.reshape(depth.shape[0], depth.shape[2], depth.shape[3])
        zero, one = torch.zeros_like(focal), torch.ones_like(focal)
        rows = [
            torch.stack([focal, zero, zero + hw[1] / 2], -1),
            torch.stack([zero, focal, zero + hw[0] / 2], -1),
            torch.stack([zero, zero, one], -1),
        ]
        return depth, torch.stack(rows, dim=1)


def fused_model(network: nn.Module, spec: ModelSpec) -> nn.Module:
    """The graph to export for a loaded network: transformers' (Depth Pro's with its camera) or
    Depth Anything 3's."""
    if type(network).__name__ == DA3_NETWORK:
        from export.da3 import FusedDepthAnything3

        return FusedDepthAnything3(network, spec).eval()
    if spec.model_type == "depth_pro":
        return FusedDepthPro(network, spec).eval()
    return FusedDepthModel(network, spec).eval()


DA3_NETWORK = "DepthAnything3Net"


def make_exportable(network: nn.Module) -> nn.Module:
    """Patch Depth Anything for export: the head method that would bake the traced size into
    the graph, and the position-embedding interpolation (same maths, faster in ONNX Runtime);
    Depth Anything 3's own (export.da3)."""
    if type(network).__name__ == DA3_NETWORK:
        from export import da3

        return da3.make_exportable(network)
    head = getattr(network, "head", None)
    if head is not None and type(head).__name__ == "DepthAnythingDepthEstimationHead":
        head.forward = types.MethodType(_trace_friendly_depth_anything_head, head)
        embeddings = typing.cast(Any, network).backbone.embeddings  # a transformers submodule
        embeddings.interpolate_pos_encoding = types.MethodType(_fast_dinov2_position_encoding, embeddings)
    return network
