"""Many frames through Triton: a video file or a folder of images in, depth out.

Uses Triton well: the frames go in batches (up to the model's ``max_batch_size``) with several
requests in flight at once (tritonclient's asyncio gRPC client), so that reading, colorizing
and writing overlap with inference. At most ``in_flight x batch`` frames are held at once, and
results are written in order. Writes a colorized depth video (or one PNG per image), side by
side with the input if asked, and on request the raw depth of every frame as a 16-bit PNG whose
text chunks carry the numbers that map it back (depthstream.render.raw_depth.write_png16).

A video's depth holds still by default (client/steady_video.py): each frame aligned to the video
and all drawn in one range, after the last frame is in; ``steady=False`` writes each frame as the
model answers it, colours in a range smoothed from frame to frame, as they are written. A folder
of images is a set of photographs: each is drawn on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tritonclient.grpc.aio as grpcaio
from tqdm import tqdm

from client.steady_video import DepthSpool, about
from depthstream.contract import (
    INTRINSICS_NAME,
    MAX_BATCH_SIZE,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    OUTPUT_NAME,
    spec_of,
)
from depthstream.render import camera as cameras
from depthstream.render import pointcloud, raw_depth
from depthstream.render.colorize import RangeSmoother, apply_colormap, colorize, to_uint8
from depthstream.request import depth_request

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path  # the depth video, or the folder of depth images
    model: str
    url: str
    colormap: str
    side_by_side: bool = False
    raw_dir: Path | None = None
    batch: int | None = None  # None: what pays for this model (batch_size_for); capped by its max
    in_flight: int = 2
    timeout_s: float = 60.0
    ply_dir: Path | None = None  # a coloured point cloud per frame (depthstream.render.pointcloud)
    hfov_deg: float | None = None  # pinned; None: the model's estimate where it has one, else 70
    steady: bool = True  # a video: aligned frames, one range (False: each frame as answered)


@dataclass
class Outcome:
    frames: int = 0
    seconds: float = 0.0
    batch: int = 1
    in_flight: int = 1

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def fit_to_contract(rgb: np.ndarray) -> np.ndarray:
    """Scale an image larger than the contract allows (a side, the pixels) down to fit, keeping
    its aspect: Triton refuses larger images, and the network sees at most 518x1288 anyway."""
    height, width = rgb.shape[:2]
    scale = min(1.0, MAX_IMAGE_SIDE / max(height, width), (MAX_IMAGE_PIXELS / (height * width)) ** 0.5)
    if scale >= 1.0:
        return rgb
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def is_video(path: Path) -> bool:
    """A file that OpenCV cannot read as an image (TIFF, JPEG 2000, ... are images too)."""
    return path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES and not cv2.haveImageReader(str(path))


def read_video(path: Path) -> tuple[Iterator[tuple[str, np.ndarray]], int, float]:
    """(frames as (name, RGB), frame count or 0 when unknown, frames per second)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open {path} as a video")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0

    def frames() -> Iterator[tuple[str, np.ndarray]]:
        index = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield f"{index:06d}", fit_to_contract(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            capture.release()

    return frames(), count, fps


def read_folder(path: Path) -> tuple[Iterator[tuple[str, np.ndarray]], int]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def frames() -> Iterator[tuple[str, np.ndarray]]:
        for file in files:
            rgb = cv2.imread(str(file), cv2.IMREAD_COLOR_RGB)
            if rgb is None:
                raise ValueError(f"cannot read {file} as an image")
            yield file.stem, fit_to_contract(rgb)

    return frames(), len(files)


def batches(frames: Iterator[tuple[str, np.ndarray]], size: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Consecutive frames of the same shape, at most ``size`` at a time (a folder mixes sizes)."""
    batch: list[tuple[str, np.ndarray]] = []
    for item in frames:
        if batch and (len(batch) == size or batch[0][1].shape != item[1].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


class Writer:
    """Writes results in order: a video, or a PNG per image; raw depth on request."""

    def __init__(self, job: Job, fps: float, video: bool) -> None:
        self.job = job
        self.fps = fps
        self.video = video
        self.smoother = RangeSmoother() if video else None  # a video's colors stay steady
        self.kind = spec_of(job.model).depth
        # a steady video is drawn once every frame is in, from depth spooled to disk
        spool_dir = job.output.parent if video else None
        self.spool = DepthSpool(self.kind, align=True, directory=spool_dir) if video and job.steady else None
        self.writer: cv2.VideoWriter | None = None
        if not video:
            job.output.mkdir(parents=True, exist_ok=True)
        for folder in (job.raw_dir, job.ply_dir):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, rgb: np.ndarray, depth: np.ndarray, camera: np.ndarray | None = None) -> None:
        """One frame's depth (and the camera a model estimated for it), in order: written now,
        or spooled for ``finish``."""
        if self.spool is not None:
            aligned, item = self.spool.add(name, depth)
            # a point cloud needs no video-wide range: written now, from the exact aligned depth
            self._write_cloud(name, aligned, rgb, about(item), camera)
            return
        picture = colorize(depth, self.job.colormap, self.smoother, kind=self.kind)
        self._emit(name, rgb, depth, picture, camera=camera)

    def finish(self, progress=None) -> None:
        """A steady video: every spooled frame drawn in the video's range (the source read again
        for what needs its pixels: side by side, point clouds)."""
        if self.spool is None:
            return
        colour_range, raw_range = self.spool.video_range(), self.spool.raw_range()
        sources = read_video(self.job.source)[0] if self.job.side_by_side else None
        for item, depth in self.spool.frames():
            rgb = next(sources)[1] if sources is not None else None
            picture = apply_colormap(to_uint8(depth, *colour_range, self.kind), self.job.colormap)
            self._emit(item.name, rgb, depth, picture, raw_range, about(item), clouds=False)
            if progress:
                progress(1)

    def _emit(
        self,
        name: str,
        rgb: np.ndarray | None,
        depth: np.ndarray,
        picture: np.ndarray,
        value_range: tuple[float, float] | None = None,
        notes: dict | None = None,
        clouds: bool = True,
        camera: np.ndarray | None = None,
    ) -> None:
        if self.job.side_by_side:
            assert rgb is not None
            picture = np.hstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), picture])
        if self.video:
            if self.writer is None:
                height, width = picture.shape[:2]
                self.writer = cv2.VideoWriter(
                    str(self.job.output), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (width, height)
                )
                if not self.writer.isOpened():
                    raise ValueError(f"cannot write a video to {self.job.output}")
            self.writer.write(picture)
        else:
            cv2.imwrite(str(self.job.output / f"{name}.png"), picture)
        if self.job.raw_dir is not None:
            raw_depth.write_png16(
                self.job.raw_dir / f"{name}.png",
                depth,
                self.kind,
                value_range,
                model=self.job.model,
                **(notes or {"frame": name}),
            )
        if clouds:
            self._write_cloud(name, depth, rgb, notes, camera)

    def _write_cloud(
        self,
        name: str,
        depth: np.ndarray,
        rgb: np.ndarray | None,
        notes: dict | None,
        camera: np.ndarray | None,
    ) -> None:
        """``camera``: the model's estimate for this frame, used unless --hfov pinned one."""
        job = self.job
        if job.ply_dir is not None:
            assert rgb is not None
            notes = notes or {"frame": name}
            estimated = camera if job.hfov_deg is None and cameras.usable(camera) else None
            hfov = job.hfov_deg or pointcloud.DEFAULT_HFOV_DEG
            pointcloud.write_cloud(
                job.ply_dir / name, depth, rgb, job.model, self.kind, hfov, estimated, **notes
            )

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
        if self.writer is not None:
            self.writer.release()


async def batch_size_for(client: grpcaio.InferenceServerClient, model: str, wanted: int | None) -> int:
    """Frames per request: what was asked, capped by the model's ``max_batch_size``; by default
    that maximum, except for the embedded CPU flavour (Python backend), which runs a batch's
    images one at a time: there batches only coarsen the pipeline (measured on an AMD EPYC, 2
    cores, the fastest preset's INT8 twin, 24 frames of 640x480: 15.2 frames/s in batches of 4,
    16.7 one frame a request, both with 2 in flight; 14.9 one request at a time)."""
    config = (await client.get_model_config(model, as_json=True))["config"]
    limit = max(1, min(MAX_BATCH_SIZE, int(config.get("max_batch_size", 0) or 1)))
    if wanted is None:
        return 1 if config.get("backend") == "python" else limit
    return min(wanted, limit)


async def infer_batch(
    client: grpcaio.InferenceServerClient, model: str, images: np.ndarray, timeout_s: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch's depth [N, H, W], and its cameras [N, 3, 3] from a model that estimates them."""
    camera = spec_of(model).intrinsics
    result = await client.infer(model, **depth_request(images, intrinsics=camera), client_timeout=timeout_s)
    return result.as_numpy(OUTPUT_NAME), result.as_numpy(INTRINSICS_NAME) if camera else None


async def produce(frames, batch: int, places: asyncio.Semaphore, pending: asyncio.Queue, request) -> None:
    """Read batches and start their requests, one per free place; then None (or a reading error)."""
    try:
        source = batches(frames, batch)
        while True:
            await places.acquire()
            chunk = await asyncio.to_thread(next, source, None)
            if chunk is None:
                break
            pending.put_nowait(asyncio.create_task(request(chunk)))
    except Exception as exc:  # an unreadable image: the writer stops there and says why
        pending.put_nowait(exc)
    finally:
        pending.put_nowait(None)


async def write_in_order(pending: asyncio.Queue, writer: Writer, places: asyncio.Semaphore, progress) -> int:
    """Write each request's frames, the oldest request first, freeing its place; the frames written."""
    written = 0
    while (item := await pending.get()) is not None:
        if isinstance(item, Exception):
            raise item
        chunk, (depths, cameras_of) = await item
        for index, ((name, rgb), depth) in enumerate(zip(chunk, depths, strict=True)):
            camera = cameras_of[index] if cameras_of is not None else None
            await asyncio.to_thread(writer.write, name, rgb, depth, camera)
        places.release()
        written += len(chunk)
        progress(len(chunk))
    return written


def abandon(pending: asyncio.Queue) -> None:
    """On an error: requests still in flight are cancelled."""
    while not pending.empty():
        item = pending.get_nowait()
        if isinstance(item, asyncio.Task):
            item.cancel()


async def run(job: Job, quiet: bool = False) -> Outcome:
    video = is_video(job.source)
    if video:
        frames, count, fps = read_video(job.source)
    else:
        (frames, count), fps = read_folder(job.source), 0.0
    writer = Writer(job, fps, video)
    client = grpcaio.InferenceServerClient(job.url)
    outcome = Outcome(in_flight=job.in_flight)
    try:
        outcome.batch = await batch_size_for(client, job.model, job.batch)

        async def request(chunk: list[tuple[str, np.ndarray]]) -> tuple[list, tuple]:
            images = np.stack([rgb for _, rgb in chunk])
            return chunk, await infer_batch(client, job.model, images, job.timeout_s)

        # a place is taken when a batch is read and freed once it is written: at most
        # in_flight x batch frames are held, however slow the writing
        places = asyncio.Semaphore(job.in_flight)
        pending: asyncio.Queue = asyncio.Queue()  # requests in order; a reading error; then None
        started = time.perf_counter()
        producer = asyncio.create_task(produce(frames, outcome.batch, places, pending, request))
        with tqdm(total=count or None, unit="frame", disable=quiet, desc=job.model) as bar:
            try:
                outcome.frames = await write_in_order(pending, writer, places, bar.update)
            finally:
                producer.cancel()
                abandon(pending)
        if writer.spool is not None:
            with tqdm(total=outcome.frames, unit="frame", disable=quiet, desc="drawing in one range") as bar:
                await asyncio.to_thread(writer.finish, bar.update)
        outcome.seconds = time.perf_counter() - started
    finally:
        writer.close()
        await client.close()
    return outcome
