"""Colorizing: valid images for any depth, every colormap, and colors that do not flicker."""

from __future__ import annotations

import numpy as np
import pytest

from depthstream.contract import DepthKind
from depthstream.render.colorize import (
    COLORMAPS,
    NoFiniteDepth,
    RangeSmoother,
    apply_colormap,
    colorize,
    to_uint8,
)


def scene(height: int = 120, width: int = 160) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return 2.0 + xs / width + 0.5 * np.sin(ys / 9.0)


@pytest.mark.parametrize("colormap", list(COLORMAPS))
def test_each_colormap_gives_a_bgr_image(colormap):
    image = colorize(scene(), colormap)
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    assert image.std() > 10


def test_colormaps_differ_and_gray_is_gray():
    images = {name: colorize(scene(), name) for name in COLORMAPS}
    assert len({image.tobytes() for image in images.values()}) == len(COLORMAPS)
    gray = images["gray"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_near_is_bright():
    depth = scene()  # inverse depth: larger = closer
    gray = colorize(depth, "gray")[..., 0].astype(int)
    assert gray[depth > np.percentile(depth, 90)].mean() > gray[depth < np.percentile(depth, 10)].mean() + 100


def test_beyond_the_display_range_saturates_instead_of_folding_back():
    depth = np.array([[-5.0, 0.0, 1.0, 2.0, 9.0]], np.float32)  # the range is 1..2
    assert to_uint8(depth, 1.0, 2.0).tolist() == [[0, 0, 0, 255, 255]]
    assert to_uint8(depth, 1.0, 2.0, DepthKind.METRIC).tolist() == [[255, 255, 255, 0, 0]]


def test_near_is_bright_in_metres_too():
    metres = scene()  # metric depth: larger = farther
    gray = colorize(metres, "gray", kind=DepthKind.METRIC)[..., 0].astype(int)
    assert (
        gray[metres < np.percentile(metres, 10)].mean()
        > gray[metres > np.percentile(metres, 90)].mean() + 100
    )
    # a broken pixel is the far end (dark) for either kind
    metres[0, 0], metres[0, 1] = np.nan, np.inf
    dark = to_uint8(metres, 2.0, 3.5, DepthKind.METRIC)
    assert dark[0, 0] == 0 and dark[0, 1] == 0 and dark[metres < 2.05].min() > 240


@pytest.mark.parametrize(
    "depth",
    [
        np.full((48, 64), 3.0, np.float32),  # flat: a covered lens
        np.zeros((48, 64), np.float32),
        np.full((48, 64), np.nan, np.float32),  # nothing finite
        np.where(np.eye(48, 64) > 0, np.inf, 1.0).astype(np.float32),
        np.where(np.eye(48, 64) > 0, np.nan, scene(48, 64)).astype(np.float32),
        np.full((48, 64), -np.inf, np.float32),
    ],
)
def test_degenerate_depth_gives_a_valid_image(depth):
    smoother = RangeSmoother()
    for _ in range(3):
        image = colorize(depth, "inferno", smoother)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert smoother.low is None or np.isfinite([smoother.low, smoother.high]).all()


def test_nan_and_inf_become_the_far_end():
    depth = scene(48, 64)
    depth[0, 0], depth[0, 1] = np.nan, np.inf
    gray = to_uint8(depth, float(np.nanmin(depth[np.isfinite(depth)])), 3.5)
    assert gray[0, 0] == 0 and gray[0, 1] == 0


def frame_to_frame_change(frames: list[np.ndarray], render) -> float:
    """Mean absolute change of 8-bit color between consecutive frames."""
    images = [render(frame).astype(np.int16) for frame in frames]
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(images, images[1:], strict=False)]))


def test_static_scene_with_sensor_noise_does_not_flicker():
    """A static scene, small sensor noise and a few hot pixels (as real depth models produce):
    smoothed percentiles keep colors steady where per-frame min-max jumps."""
    rng = np.random.default_rng(0)
    base = scene()
    frames = []
    for _ in range(30):
        frame = base + rng.normal(0, 0.005, base.shape).astype(np.float32)
        hot = rng.integers(0, base.size, 3)
        frame.flat[hot] = base.max() + rng.uniform(0, 3, 3)  # a few outliers, different every frame
        frames.append(frame)
    smoother = RangeSmoother()
    ours = frame_to_frame_change(frames, lambda d: colorize(d, "gray", smoother))

    def min_max(depth):
        return apply_colormap(to_uint8(depth, float(depth.min()), float(depth.max())), "gray")

    naive = frame_to_frame_change(frames, min_max)
    assert ours < 2.0, f"colors change by {ours:.2f} levels per frame on a static scene"
    assert ours < naive / 4, f"ours {ours:.2f} vs per-frame min-max {naive:.2f}"


def test_smoother_follows_a_real_scene_change():
    smoother = RangeSmoother()
    smoother.update((0.0, 1.0))
    for _ in range(30):
        low, high = smoother.update((10.0, 20.0))
    assert abs(low - 10.0) < 0.1 and abs(high - 20.0) < 0.1


def test_a_16_bit_png_gives_the_depth_back_with_what_maps_it(tmp_path):
    """One encoder for every 16-bit output: quantize, with min and max in the PNG's text."""
    import cv2
    from PIL import Image

    from depthstream.render import raw_depth

    depth = scene(48, 64).astype(np.float32)
    depth[0, 0] = np.nan
    path = tmp_path / "d.png"
    header = raw_depth.write_png16(path, depth, model="m")
    q = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert q.dtype == np.uint16 and q.max() == 65535 and q.min() == 0
    assert Image.open(path).text["depthstream.model"] == "m"
    back = raw_depth.read_png16(path)
    finite = np.isfinite(depth)
    step = (header["max"] - header["min"]) / 65535
    assert np.abs(back[finite] - depth[finite]).max() <= step / 2 * (1 + 1e-6)
    assert (header["min"], header["max"]) == (float(np.nanmin(depth)), float(np.nanmax(depth)))


def test_no_finite_depth_can_be_refused():
    with pytest.raises(NoFiniteDepth):
        colorize(np.full((8, 8), np.nan, np.float32), require_finite=True)
    assert colorize(np.full((8, 8), 1.0, np.float32), require_finite=True).shape == (8, 8, 3)
