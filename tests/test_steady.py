"""Steady depth: the per-stream alignment (depthstream/render/steady.py), the stream's renderer
using it, and a video's one range (client/steady_video.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.rendering import RenderRequest, StreamRenderer
from client.steady_video import DepthSpool
from depthstream.contract import MODELS, DepthKind
from depthstream.render import raw_depth
from depthstream.render.steady import DepthAligner, fit_affine

RELATIVE = "depth_anything_v2_small"
METRIC = next(name for name, spec in MODELS.items() if spec.depth is DepthKind.METRIC)


def scene(seed: int = 0, height: int = 120, width: int = 160) -> np.ndarray:
    """A smooth depth-like field: a slope, bumps and a box in front."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = 2.0 + yy / height + 0.5 * np.sin(xx / rng.uniform(8, 20)) * np.cos(yy / rng.uniform(8, 20))
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    field[top : top + height // 3, left : left + width // 3] += 1.5
    return field.astype(np.float32)


def noisy(depth: np.ndarray, scale: float, shift: float, sigma: float = 0.002, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * depth + shift + rng.normal(0, sigma, depth.shape)).astype(np.float32)


def test_the_fit_recovers_a_known_scale_and_shift_within_one_percent():
    reference = scene()
    aligner = DepthAligner()
    aligner.align(reference)
    aligned, alignment = aligner.align(noisy(reference, 1.2, 0.3))
    # the frame is 1.2 x reference + 0.3: the fit maps it back
    assert alignment.scale == pytest.approx(1 / 1.2, rel=0.01)
    assert alignment.shift == pytest.approx(-0.3 / 1.2, rel=0.01)
    assert not alignment.restarted
    span = np.ptp(reference)
    assert np.abs(aligned - reference).mean() < 0.01 * span


def test_pixels_without_depth_are_left_out_and_the_reference_fills_when_they_get_some():
    full = scene()
    sky = full.copy()
    sky[:30] = np.nan  # no depth there (a model's sky, an invalid region)
    aligner = DepthAligner()
    aligner.fit(sky)
    alignment = aligner.fit(noisy(np.where(np.isnan(sky), np.inf, sky), 2.0, 1.0))
    assert alignment.scale == pytest.approx(0.5, rel=0.01) and not alignment.restarted
    alignment = aligner.fit(noisy(full, 2.0, 1.0, seed=2))  # depth everywhere now
    assert alignment.scale == pytest.approx(0.5, rel=0.01) and not alignment.restarted
    assert np.isfinite(aligner.reference).all()
    top = aligner.reference[: 30 // aligner.step]
    assert np.abs(top - full[: 30 : aligner.step, :: aligner.step][: top.shape[0]]).max() < 0.05
    alignment = aligner.fit(noisy(full, 3.0, 0.0, seed=3))  # and every grid point is fitted again
    assert alignment.scale == pytest.approx(1 / 3, rel=0.01)


def test_an_occluding_patch_of_a_fifth_of_the_pixels_moves_the_fit_less_than_five_percent():
    reference = scene()
    aligner = DepthAligner()
    aligner.align(reference)
    frame = noisy(reference, 0.8, -0.2)
    frame[:54, :71] = frame.max() * 1.5  # a hand in front of the lens: 20% of the pixels, near
    _, alignment = aligner.align(frame)
    assert alignment.scale == pytest.approx(1 / 0.8, rel=0.05)
    assert alignment.shift == pytest.approx(0.2 / 0.8, rel=0.05)
    assert not alignment.restarted


def test_plain_least_squares_would_follow_the_patch():
    """Why the fit is trimmed: without it the same patch pulls the scale far off (the test above
    would catch a fit that lost its trimming)."""
    reference = scene().ravel()
    frame = noisy(scene(), 0.8, -0.2).ravel()
    frame[: frame.size // 5] = frame.max() * 1.5
    plain = np.polyfit(frame, reference, 1)[0]
    trimmed, _, kept = fit_affine(frame, reference)
    assert abs(plain - 1 / 0.8) > 0.2 and trimmed == pytest.approx(1 / 0.8, rel=0.05)
    assert kept.mean() == pytest.approx(0.7, abs=0.01)


def test_a_scene_cut_or_a_new_size_restarts_the_alignment():
    aligner = DepthAligner()
    aligner.align(scene(0))
    aligner.align(noisy(scene(0), 1.1, 0.1))
    cut = np.random.default_rng(5).uniform(0, 4, scene().shape).astype(np.float32)
    out, alignment = aligner.align(cut)
    assert alignment.restarted and (alignment.scale, alignment.shift) == (1.0, 0.0)
    assert out is cut  # the new scene's first frame as it is
    _, alignment = aligner.align(noisy(cut, 1.3, 0.0, sigma=0.0))
    assert not alignment.restarted and alignment.scale == pytest.approx(1 / 1.3, rel=0.01)
    _, alignment = aligner.align(scene(0, 60, 80))
    assert alignment.restarted


def test_a_still_scene_holds_still_frame_to_frame():
    reference = scene()
    aligner = DepthAligner()
    rng = np.random.default_rng(3)
    outputs = []
    for k in range(12):
        frame = noisy(reference, rng.uniform(0.8, 1.25), rng.uniform(-0.3, 0.3), seed=k)
        outputs.append(aligner.align(frame)[0])
    changes = [np.abs(b - a).mean() for a, b in zip(outputs, outputs[1:], strict=False)]
    assert max(changes) < 0.01 * np.ptp(reference)


def request(model: str = RELATIVE, steady: bool = True, scene_count: int = 0) -> RenderRequest:
    return RenderRequest(model, "inferno", "raw", steady, scene_count)


def raw_of(renderer: StreamRenderer, depth: np.ndarray, req: RenderRequest):
    rendered = renderer.render(depth, req)
    return raw_depth.decode(rendered.binaries[0], rendered.raw), rendered


def test_the_stream_renderer_aligns_relative_depth_and_says_how():
    renderer = StreamRenderer(80)
    raw_of(renderer, scene(), request())
    rendered = renderer.render(noisy(scene(), 2.0, 1.0), request())
    assert rendered.alignment["scale"] == pytest.approx(0.5, rel=0.01)
    assert "align" in rendered.timings_ms
    depth = raw_depth.decode(rendered.binaries[0], rendered.raw)
    assert np.abs(depth - scene()).max() < 0.05 * np.ptp(scene())


def test_steady_false_gives_exactly_the_per_frame_output():
    frame = noisy(scene(), 2.0, 1.0)
    renderer = StreamRenderer(80)
    raw_of(renderer, scene(), request(steady=False))
    depth, rendered = raw_of(renderer, frame, request(steady=False))
    assert rendered.alignment is None
    expected = raw_depth.decode(*raw_depth.encode(frame))
    assert np.array_equal(depth, expected)


def test_a_metric_model_is_never_rescaled():
    renderer = StreamRenderer(80)
    metres = scene() * 2
    raw_of(renderer, metres, request(METRIC))
    depth, rendered = raw_of(renderer, metres * 1.3, request(METRIC))
    assert rendered.alignment is None
    assert np.array_equal(depth, raw_depth.decode(*raw_depth.encode(metres * 1.3, DepthKind.METRIC)))


def test_a_new_scene_or_another_model_starts_the_alignment_again():
    renderer = StreamRenderer(80)
    raw_of(renderer, scene(), request())
    _, rendered = raw_of(renderer, noisy(scene(), 2.0, 0.0), request())
    assert not rendered.alignment["restarted"]
    _, rendered = raw_of(renderer, noisy(scene(), 2.0, 0.0), request(scene_count=1))
    assert rendered.alignment["restarted"], "the client said the source changed"
    _, rendered = raw_of(
        renderer, noisy(scene(), 2.0, 0.0), request("depth_anything_v2_small_252", scene_count=1)
    )
    assert rendered.alignment["restarted"], "another model, another depth scale"


def test_a_videos_frames_come_back_aligned_in_one_range(tmp_path):
    spool = DepthSpool(DepthKind.RELATIVE, align=True, directory=tmp_path)
    rng = np.random.default_rng(0)
    for k in range(6):
        spool.add(f"{k:06d}", noisy(scene(), rng.uniform(0.8, 1.25), rng.uniform(-0.3, 0.3), seed=k))
    low, high = spool.video_range()
    raw_low, raw_high = spool.raw_range()
    assert raw_low <= low < high <= raw_high
    frames = list(spool.frames())
    assert [item.name for item, _ in frames] == [f"{k:06d}" for k in range(6)]
    first = frames[0][1]
    for item, depth in frames[1:]:
        assert np.abs(depth - first).mean() < 0.01 * np.ptp(first), item
        assert item.alignment is not None and not item.alignment["restarted"]
    spool.close()


def test_a_metric_video_is_not_aligned_only_drawn_in_one_range(tmp_path):
    spool = DepthSpool(DepthKind.METRIC, align=True, directory=tmp_path)
    spool.add("0", scene())
    spool.add("1", scene() * 2)
    (first, a), (second, b) = spool.frames()
    assert first.alignment is None and second.alignment is None
    assert np.abs(b - 2 * scene()).max() < 2 * np.ptp(2 * scene()) / 65535
    assert spool.raw_range() == pytest.approx((scene().min(), 2 * scene().max()))
    spool.close()
