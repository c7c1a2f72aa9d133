"""The distance to the machine's limit (bench.limit): a model's work counted at export (export.flops)
against an independent count, and each engine's share of the measured ceiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench import limit
from export.flops import count_gflops
from export.repository import Manifest, StagedModel


class TinyGraph(nn.Module):
    """A uint8 frame in, as the fused graphs take it: a convolution, then a linear layer per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
        self.linear = nn.Linear(8, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255
        x = torch.relu(self.conv(x))  # element-wise: not counted
        return self.linear(x.permute(0, 2, 3, 1))


def test_the_flop_count_of_a_tiny_model_matches_a_count_by_hand():
    height, width = 30, 40
    out_h, out_w = 15, 20  # stride 2, padding 1, kernel 3
    conv = 2 * (3 * 3 * 3) * 8 * out_h * out_w  # a multiply-add per kernel weight per output value
    linear = 2 * 8 * 4 * out_h * out_w
    frame = np.zeros((height, width, 3), np.uint8)
    assert count_gflops(TinyGraph(), frame) * 1e9 == pytest.approx(conv + linear)


def test_the_flop_count_grows_with_the_frame():
    small, large = np.zeros((30, 40, 3), np.uint8), np.zeros((60, 80, 3), np.uint8)
    assert count_gflops(TinyGraph(), large) == pytest.approx(4 * count_gflops(TinyGraph(), small))


def exported(repository, name: str, gflops: float) -> None:
    with StagedModel(repository, name) as staged:
        staged.write_config('name: "' + name + '"\n')
        staged.onnx_path.write_bytes(b"")
        staged.write_manifest(Manifest(name, "random", "random", True, "code", gflops=gflops))
        staged.commit()


def test_each_engine_is_held_to_its_precisions_ceiling(tmp_path):
    exported(tmp_path, "depth_anything_v2_small", 100.0)
    exported(tmp_path, "depth_anything_v2_small_int8", 100.0)
    exported(tmp_path, "depth_anything_v2_small_252", 0.0)  # exported before the count
    top = limit.Ceiling(fp32_gflops=150.0, int8_gops=300.0, threads=2)
    timed = [
        ("depth_anything_v2_small", "ONNX Runtime", 1000.0),
        ("depth_anything_v2_small", "OpenVINO FP32", 800.0),
        ("depth_anything_v2_small_int8", "ONNX Runtime", 1000.0),
        ("depth_anything_v2_small_252", "ONNX Runtime", 250.0),
    ]
    rows = limit.rows(tmp_path, timed, top)
    assert [r["achieved_gflops_per_s"] for r in rows] == [100.0, 125.0, 100.0, None]
    assert [r["share"] for r in rows] == [pytest.approx(0.667, abs=1e-3), 0.833, 0.333, None]
    table = limit.markdown("a machine", top, rows)
    assert "| depth_anything_v2_small_int8 | ONNX Runtime | 100.0 | 1000 | 100 | 33% of INT8's 300 |" in table
    assert "not counted" in table.splitlines()[-1]


def test_the_ceiling_is_measured_for_both_precisions(monkeypatch):
    monkeypatch.setattr(limit, "SIDE", 256)  # the same graphs, small: the suite's time
    monkeypatch.setattr(limit, "TRIES", 2)
    top = limit.ceiling(threads=1)
    assert top.fp32_gflops > 0 and top.int8_gops > 0 and top.threads == 1
    assert top.for_precision("int8") == top.int8_gops and top.for_precision("fp32") == top.fp32_gflops
