"""A depth video that holds still: each frame aligned to the video (relative models), and one
colour range for the whole video, as Video-Depth-Anything draws its videos (and one raw-depth
range: the video's smallest to largest value, so that no raw frame saturates).

The model runs once a frame. Its depth, aligned (depthstream/render/steady.py), is spooled to
disk as 16 bits over the frame's own range (2 bytes a pixel: 600 KB a 640x480 frame, deleted at
the end), with a sample of 256 values a frame for the video's range (1 KB a frame in memory);
once every frame is in, they are read back one at a time and drawn in that one range. Metric
depth (metres) is not rescaled, only drawn in one range.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depthstream.contract import DepthKind
from depthstream.render import raw_depth
from depthstream.render.colorize import HIGH_PERCENTILE, LOW_PERCENTILE
from depthstream.render.steady import DepthAligner

SAMPLE_PER_FRAME = 256


@dataclass(frozen=True)
class Spooled:
    name: str
    shape: tuple[int, int]
    low: float
    high: float
    alignment: dict | None  # the frame's scale and shift (depthstream.render.steady.Alignment)


class DepthSpool:
    """Frames in (``add``, in order), then the video's range and the frames back (``frames``)."""

    def __init__(self, kind: DepthKind, align: bool, directory: Path | None = None) -> None:
        self.kind = kind
        # relative depth by scale and shift, depth up to scale by a scale alone; metres as they are
        self.aligner = DepthAligner() if align and kind is not DepthKind.METRIC else None
        # closed by close(): the spool lives as long as its video is being written
        self.file = tempfile.TemporaryFile(dir=directory, prefix="depthstream-spool-")  # noqa: SIM115
        self.index: list[Spooled] = []
        self.samples: list[np.ndarray] = []
        self.rng = np.random.default_rng(0)

    def add(self, name: str, depth: np.ndarray) -> tuple[np.ndarray, Spooled]:
        """Spools one frame; returns its depth as aligned (exact, before the 16-bit spool) and
        its record, for what needs each frame at full precision now (point clouds)."""
        alignment = None
        if self.aligner is not None:
            depth, aligned = self.aligner.align(depth, scale_only=self.kind is DepthKind.SCALED)
            alignment = aligned.header()
        quantized, header = raw_depth.quantize(depth, self.kind)
        self.file.write(quantized.tobytes())
        height, width = depth.shape
        item = Spooled(name, (height, width), header["min"], header["max"], alignment)
        self.index.append(item)
        finite = depth[np.isfinite(depth)]
        self.samples.append(self.rng.choice(finite, size=min(SAMPLE_PER_FRAME, finite.size), replace=False))
        return depth, item

    def raw_range(self) -> tuple[float, float]:
        """The video's smallest and largest depth: the raw frames' one range (nothing saturates)."""
        if not self.index:
            return 0.0, 1.0
        return min(item.low for item in self.index), max(item.high for item in self.index)

    def video_range(self) -> tuple[float, float]:
        """The 2nd and 98th percentiles of every frame's sample: the colours' one range."""
        if not self.samples:
            return 0.0, 1.0
        low, high = np.percentile(np.concatenate(self.samples), [LOW_PERCENTILE, HIGH_PERCENTILE])
        return float(low), float(max(high, low + 1e-6))

    def frames(self) -> Iterator[tuple[Spooled, np.ndarray]]:
        """Each frame's record and its depth (float32, within half a 16-bit step), in order."""
        self.file.seek(0)
        for item in self.index:
            count = item.shape[0] * item.shape[1]
            q = np.frombuffer(self.file.read(2 * count), "<u2").reshape(item.shape)
            step = (item.high - item.low) / raw_depth.LEVELS
            yield item, (item.low + q.astype(np.float32) * np.float32(step)).astype(np.float32)

    def close(self) -> None:
        self.file.close()


def about(item: Spooled) -> dict:
    """What a raw frame's PNG (its text chunks) and a point cloud's JSON say of the frame: its
    name and its alignment (aligned = scale * the model's depth + shift; None: not aligned)."""
    return {"frame": item.name, "alignment": item.alignment}
