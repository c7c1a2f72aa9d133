"""The model contract's ceiling on Depth Anything's network input, as pure arithmetic (the graph
itself is checked against the same rule in test_bounded_cost)."""

from __future__ import annotations

import pytest

from depthstream.contract import DEPTH_ANYTHING_V2_SMALL, MODELS

DA = DEPTH_ANYTHING_V2_SMALL


@pytest.mark.parametrize(
    "height,width",
    [(480, 640), (640, 480), (1080, 1920), (1080, 2560), (2532, 1170), (100, 250), (250, 100), (37, 91)],
)
def test_within_two_and_a_half_to_one_the_network_input_is_the_official_one(height, width):
    size, m = DA.resize.size, DA.resize.multiple_of
    scale = max(size / height, size / width)  # the official rule, without any ceiling

    def official(x: float) -> int:
        y = int(round(x / m) * m)
        return y if y >= size else int(-(-x // m) * m)

    assert DA.resize.network_size(height, width) == (official(scale * height), official(scale * width))


def test_beyond_the_ceiling_the_long_side_is_capped():
    assert DA.resize.max_side == 1288
    assert DA.resize.network_size(60, 600) == (518, 1288)
    assert DA.resize.network_size(4096, 2) == (1288, 518)
    for name, spec in MODELS.items():
        if spec.resize.keep_aspect:
            assert spec.resize.network_size(2, 1920)[1] == spec.resize.max_side, name
