"""Shared test helpers: free ports, photographs, the tiny models, configs, a short video."""

from __future__ import annotations

import cv2
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from depthstream import model_config
from depthstream.contract import MAX_BATCH_SIZE, MODELS, Precision, contract_violations
from export.images import photograph, resized
from serving.triton import free_port  # noqa: F401 (the tests take it from here)

# What the tiny test repository serves (conftest: every preset, INT8 twins kept with --int8
# always): every model of the contract but the BF16 twins, which a kept INT8 twin excludes, and
# the tiny Depth Anything 3's INT8 twins, which the twin judgement drops as unfaithful
# (correlation 0.987-0.991 against FP32: --int8 always keeps a slower twin, never an unfaithful one).
TINY_SERVED = frozenset(
    name
    for name, spec in MODELS.items()
    if spec.precision != Precision.BF16
    and not (spec.precision == Precision.INT8 and spec.model_type == "depth_anything_3")
)


def photo(width: int, height: int, name: str = "astronaut") -> np.ndarray:
    """A real photograph (skimage.data) resized to width x height, RGB uint8."""
    return resized(photograph(name), width, height)


def violations(config: mc.ModelConfig) -> list[str]:
    return contract_violations(config.name, *model_config.tensors(config))


def check_common(config: mc.ModelConfig, name: str, batching: bool = True) -> None:
    assert config.name == name
    assert violations(config) == []
    assert config.max_batch_size == MAX_BATCH_SIZE
    assert config.HasField("dynamic_batching") == batching
    if batching:
        policy = config.dynamic_batching.default_queue_policy
        assert 0 < policy.max_queue_size <= 64, "the queue must be bounded"
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT


def write_video(path, count: int = 9, size: tuple[int, int] = (96, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    assert writer.isOpened()
    for i in range(count):
        frame = np.roll(photo(size[0], size[1], "chelsea"), 4 * i, axis=1)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def video_frame(path, index: int) -> np.ndarray:
    """Frame ``index`` (from 0) of a video, RGB, as OpenCV decodes it."""
    capture = cv2.VideoCapture(str(path))
    for _ in range(index + 1):
        ok, bgr = capture.read()
        assert ok, f"{path} has no frame {index}"
    capture.release()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")
