"""Steady depth: each frame of a relative-depth stream aligned to the stream's running reference.

A relative model answers each frame only up to an unknown scale and shift, so the frames of a
still scene come back stretched and offset differently: the depth (and every colour, point and
saved frame drawn from it) flickers. Here each frame's depth ``d`` is mapped to ``scale * d +
shift``, the affine map that best fits it to the stream's reference, by trimmed least squares on
a grid of about 2,400 pixels (the same each frame): the worst-fitting 30% (a hand in front of the
lens, a thing that moved) are left out of the fit and barely change the reference. The reference
is an average of the aligned frames on that grid (the fit is smoothed over time through it), so
the stream keeps the scale of its first frame. When even the pixels that fit well miss by more
than ``CUT_RESIDUAL`` of the reference's spread (a new scene), or the frame's size changes, the
alignment starts again from that frame as it is. Metric depth (metres) is never rescaled: the
caller leaves it alone.

Costs a stream one grid of float32 (about 10 KB at 640x480) and well under a millisecond a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLES = 2400  # grid points the fit uses: 58 x 44 at 640 x 480 (every 11th pixel each way)
KEEP = 0.7  # the fraction of the grid, best-fitting first, each fit uses
FIT_ROUNDS = 3  # refits of least squares on the best-fitting KEEP
# median miss of the kept pixels, of the reference's spread (its median absolute deviation):
# past it, a new scene. A fit to an unrelated frame, flat at its mean, misses by ~0.7 of it
CUT_RESIDUAL = 0.25
REFERENCE_RATE = 0.25  # weight of the newest aligned frame in the reference, where it fits
OUTLIER_RATE = 0.05  # the same where it does not: a hand passing leaves little, a moved thing stays
MIN_SPAN = 1e-6


@dataclass(frozen=True)
class Alignment:
    """What was done to one frame: ``aligned = scale * depth + shift`` (undo: ``(aligned -
    shift) / scale``); ``restarted`` when this frame began a new reference (scale 1, shift 0),
    and ``residual``, the median miss of the fit's pixels, of the reference's spread."""

    scale: float
    shift: float
    residual: float
    restarted: bool

    def map(self, value: float) -> float:
        """A value of the frame's own depth, aligned."""
        return self.scale * value + self.shift

    def unmap(self, value: float) -> float:
        """An aligned value, back in the frame's own depth (scale > 0 always)."""
        return (value - self.shift) / self.scale

    def header(self) -> dict[str, float | bool]:
        """As the depth header and the saved frames carry it."""
        return {
            "scale": round(self.scale, 6),
            "shift": round(self.shift, 6),
            "residual": round(self.residual, 4),
            "restarted": self.restarted,
        }


def grid_step(height: int, width: int) -> int:
    """Every n-th pixel each way, for about SAMPLES grid points."""
    return max(1, int(round(np.sqrt(height * width / SAMPLES))))


def _ranks(values: np.ndarray, *fractions: float) -> list[float]:
    """Order statistics at these fractions (np.percentile's nearest rank, several times faster)."""
    last = values.size - 1
    indices = [int(round(f * last)) for f in fractions]
    ordered = np.partition(values, indices)
    return [float(ordered[i]) for i in indices]


def spread(values: np.ndarray) -> float:
    """The median absolute deviation from the median: what a fit's miss is measured against."""
    (median,) = _ranks(values, 0.5)
    (deviation,) = _ranks(np.abs(values - median), 0.5)
    return max(deviation, MIN_SPAN)


def fit_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(scale, shift, kept) minimizing |scale * x + shift - y| over the best-fitting KEEP of the
    points (trimmed least squares); ``kept`` marks the points of the last fit. Started from the
    quartiles (which a patch of outliers moves little, where plain least squares would follow
    it), then refitted on the points that fit best. Flat x gives scale 0."""
    x_q1, x_median, x_q3 = _ranks(x, 0.25, 0.5, 0.75)
    y_q1, y_median, y_q3 = _ranks(y, 0.25, 0.5, 0.75)
    if x_q3 - x_q1 <= MIN_SPAN * max(1.0, abs(x_median)):
        return 0.0, y_median, np.ones(x.shape, dtype=bool)
    # centred, in float64: the sums below stay exact enough however far from zero the depth is
    xc = x.astype(np.float64)
    xc -= x_median
    yc = y.astype(np.float64)
    yc -= y_median
    scale, offset = (y_q3 - y_q1) / (x_q3 - x_q1), 0.0  # yc = scale * xc + offset
    cut = int(KEEP * (x.size - 1))
    miss = np.empty_like(xc)
    kept = np.ones(x.shape, dtype=bool)
    for _ in range(FIT_ROUNDS):
        np.multiply(xc, scale, out=miss)
        miss += offset
        miss -= yc
        np.abs(miss, out=miss)
        kept = miss <= np.partition(miss, cut)[cut]
        # sums over the kept points as dot products with a 0/1 weight: no copies of the points
        weight = kept.astype(np.float64)
        weighted_x = weight * xc
        n, sx, sy = float(weight.sum()), float(weighted_x.sum()), float(weight @ yc)
        variance = n * float(weighted_x @ xc) - sx * sx
        if variance <= 1e-12 * n * n:
            return 0.0, y_median, kept
        scale = (n * float(weighted_x @ yc) - sx * sy) / variance
        offset = (sy - scale * sx) / n
    return scale, y_median + offset - scale * x_median, kept


def fit_scale(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(scale, 0, kept) minimizing |scale * x - y| over the best-fitting KEEP of the points: the
    alignment of depth known up to scale alone (Depth Anything 3), where a shift would move the
    camera. Started from the medians' ratio, refitted on the points that fit best."""
    (x_median,) = _ranks(x, 0.5)
    (y_median,) = _ranks(y, 0.5)
    if abs(x_median) <= MIN_SPAN:
        return 0.0, 0.0, np.ones(x.shape, dtype=bool)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    scale = y_median / x_median
    cut = int(KEEP * (x.size - 1))
    kept = np.ones(x.shape, dtype=bool)
    for _ in range(FIT_ROUNDS):
        miss = np.abs(scale * xd - yd)
        kept = miss <= np.partition(miss, cut)[cut]
        weight = kept.astype(np.float64)
        denominator = float((weight * xd) @ xd)
        if denominator <= 1e-12:
            return 0.0, 0.0, kept
        scale = float((weight * xd) @ yd) / denominator
    return scale, 0.0, kept


class DepthAligner:
    """One stream's alignment; ``align`` each frame in order, ``reset`` on a new scene."""

    def __init__(self) -> None:
        self.reference: np.ndarray | None = None  # aligned depth on the grid
        self.shape: tuple[int, int] | None = None
        self.step = 1

    def reset(self) -> None:
        self.reference = None
        self.shape = None

    @property
    def nbytes(self) -> int:
        return 0 if self.reference is None else self.reference.nbytes

    def fit(self, depth: np.ndarray, scale_only: bool = False) -> Alignment:
        """This frame's alignment to the stream (the reference moves on with it). The pixels are
        not touched: a drawing applies it to the numbers it maps them with (``Alignment.map``).
        ``scale_only``: depth known up to scale (no shift)."""
        height, width = depth.shape[:2]
        if self.reference is None or self.shape != (height, width):
            return self._restart(depth)
        sample = np.ascontiguousarray(depth[:: self.step, :: self.step], dtype=np.float32)
        finite = np.isfinite(sample)
        if finite.all() and np.isfinite(self.reference).all():  # the usual case: no copies
            valid, x, y = None, sample.reshape(-1), self.reference.reshape(-1)
        else:
            valid = finite & np.isfinite(self.reference)
            if valid.sum() < SAMPLES // 10:  # too little finite depth to fit: a new reference
                return self._restart(depth)
            x, y = sample[valid], self.reference[valid]
        scale, shift, kept = (fit_scale if scale_only else fit_affine)(x, y)
        (miss,) = _ranks(np.abs(scale * x[kept] + shift - y[kept]), 0.5)
        residual = miss / spread(y)
        if scale <= 0 or residual > CUT_RESIDUAL:
            return self._restart(depth)
        self._update_reference(scale * sample + shift, valid, kept)
        return Alignment(scale, shift, residual, restarted=False)

    def align(self, depth: np.ndarray, scale_only: bool = False) -> tuple[np.ndarray, Alignment]:
        """(aligned depth, what was done), for a caller that needs the aligned pixels (a video's
        spool); the depth itself is left as it was."""
        alignment = self.fit(depth, scale_only)
        if alignment.restarted:
            return depth, alignment
        aligned = depth.astype(np.float32, copy=True)
        aligned *= np.float32(alignment.scale)
        aligned += np.float32(alignment.shift)
        return aligned, alignment

    def _restart(self, depth: np.ndarray) -> Alignment:
        height, width = depth.shape[:2]
        self.shape = (height, width)
        self.step = grid_step(height, width)
        self.reference = np.array(depth[:: self.step, :: self.step], dtype=np.float32)
        return Alignment(1.0, 0.0, 0.0, restarted=True)

    def _update_reference(self, aligned: np.ndarray, valid: np.ndarray | None, kept: np.ndarray) -> None:
        """Moves the reference towards this frame's aligned grid: the fitted points at
        REFERENCE_RATE, the others at OUTLIER_RATE (``valid``: the grid points both have; None:
        all of them, ``kept`` then marks the grid itself)."""
        assert self.reference is not None
        if valid is None:
            rate = np.where(
                kept.reshape(self.reference.shape), np.float32(REFERENCE_RATE), np.float32(OUTLIER_RATE)
            )
            self.reference += rate * (aligned - self.reference)
            return
        rate = np.full(self.reference.shape, OUTLIER_RATE, dtype=np.float32)
        rate.reshape(-1)[np.flatnonzero(valid)[kept]] = REFERENCE_RATE  # the fitted points
        with np.errstate(invalid="ignore"):
            gap = np.where(valid, aligned - self.reference, 0.0)
        self.reference += rate * gap
        # grid points with no depth yet take the first finite aligned value they get
        missing = ~np.isfinite(self.reference) & np.isfinite(aligned)
        self.reference[missing] = aligned[missing]
