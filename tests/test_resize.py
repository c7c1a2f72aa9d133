"""export.resize.bicubic computes PyTorch's (and OpenCV's) bicubic, at any size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.resize import bicubic


@pytest.mark.parametrize(
    "height,width,out_h,out_w",
    [
        (480, 640, 518, 686),  # webcam frame to Depth Anything's network input
        (720, 1280, 384, 384),  # downscale, MiDaS
        (384, 384, 480, 640),  # depth back to the frame
        (17, 31, 518, 938),  # tiny input, large upscale
        (5, 7, 3, 2),  # odd downscale
        (37, 37, 37, 49),  # position embeddings: one axis unchanged
        (1, 1, 4, 4),  # a single pixel
    ],
)
def test_matches_pytorch_and_opencv(height, width, out_h, out_w):
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    ours = bicubic(x, out_h, out_w)
    torch_ref = F.interpolate(x, (out_h, out_w), mode="bicubic", align_corners=False)
    assert ours.shape == (2, 3, out_h, out_w)
    assert float((ours - torch_ref).abs().max()) < 1e-4
    opencv = cv2.resize(x[0].permute(1, 2, 0).numpy(), (out_w, out_h), interpolation=cv2.INTER_CUBIC)
    assert float(np.abs(ours[0].permute(1, 2, 0).numpy() - opencv).max()) < 2e-4


def test_same_size_is_identity():
    x = torch.rand(1, 4, 9, 11)
    assert torch.equal(bicubic(x, 9, 11), x)
