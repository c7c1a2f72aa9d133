"""One WebSocket stream: latest frame wins, one inference in flight, stable colors.

The receive loop never waits for inference: a frame that arrives while another is being
processed waits in a single slot (bridge/intake.py), and a newer frame replaces it (counted in
``dropped``, and told to the client in a ``dropped`` notice: bridge/notices.py).
Decode, colorize and encode run in worker threads, so the event loop never blocks on them, and
a frame's colorize, encode and send overlap the next frame's inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np
from starlette.websockets import WebSocket

from bridge import choices, images, protocol
from bridge.accounts import StreamAccounts
from bridge.admission import RateLimiter
from bridge.choices import StreamChoices
from bridge.errors import BadOutput, FrameError
from bridge.intake import Frame, FrameIntake
from bridge.metrics import BridgeMetrics
from bridge.notices import DropReason
from bridge.outbox import Outbox
from bridge.pool import TritonPool
from bridge.protocol import ErrorCode, ProtocolError
from bridge.rendering import Rendered, RenderRequest, StreamRenderer
from bridge.settings import BridgeSettings
from bridge.triton import Inferred, ModelNotReady, TritonError, TritonUnavailable, Turn
from depthstream.contract import DEFAULT_MODEL, spec_of

log = logging.getLogger(__name__)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class StreamSession:
    def __init__(
        self, websocket: WebSocket, pool: TritonPool, settings: BridgeSettings, metrics: BridgeMetrics
    ) -> None:
        self.websocket = websocket
        self.pool = pool
        self.gateway = pool.assign()
        self.settings = settings
        self.metrics = metrics
        # the model: the app sets its choice (bridge.default_model) before start()
        self.choices = StreamChoices(DEFAULT_MODEL, settings.default_colormap, steady=settings.steady)
        self.ready_models: list[str] = []  # what the server serves now (the app sets it too)
        self.renderer = StreamRenderer(settings.jpeg_quality)
        self.accounts = StreamAccounts()
        self.outbox = Outbox(websocket, settings.send_timeout_s, metrics, self.accounts)
        self.intake = FrameIntake(settings.max_fps, self.outbox, metrics)
        self.idle = asyncio.Event()  # set while no frame is being processed
        self.idle.set()
        # the last frame inferred, being drawn and sent while the next one is inferred
        self.answering: asyncio.Task | None = None
        self.control_limiter = RateLimiter(settings.max_controls_per_s)

    @property
    def model(self) -> str:
        return self.choices.model

    @model.setter
    def model(self, name: str) -> None:
        self.choices.model = name

    # --- receiving -------------------------------------------------------------------------
    async def start(self) -> None:
        """Greet the client, and check the default model against the contract."""
        await self.outbox.send(choices.hello(self.settings, self.choices, self.ready_models))
        try:
            info = await self.gateway.check_model(self.model)
            self.choices.random_weights_of[self.model] = info.random_weights
        except TritonError as exc:
            await self.outbox.error(exc.code, exc.message)

    async def on_frame(self, data: bytes) -> None:
        await self.intake.offer(data)

    async def on_control(self, text: str) -> None:
        if not self.control_limiter.allow():
            await self._refuse_control()
            return
        try:
            update = protocol.parse_control(text)
        except ProtocolError as exc:
            self.metrics.control_rejected.labels(exc.code).inc()
            await self.outbox.error(exc.code, exc.message, refuses_config=True)
            return
        if update.model is not None and update.model != self.model:
            try:
                info = await self.gateway.check_model(update.model)
            except TritonError as exc:
                self.metrics.control_rejected.labels(exc.code).inc()
                await self.outbox.error(exc.code, exc.message, refuses_config=True)
                return
            self.choices.random_weights_of[update.model] = info.random_weights
        self.choices.apply(update)
        await self.outbox.send(
            protocol.config_ack(
                **self.choices.fields(),
                random_weights=self.choices.random_weights,
                # the stream's accounts so far: a config message with no field asks for them
                received=self.accounts.received,
                dropped=self.accounts.dropped,
                controls_refused=self.accounts.controls_refused,
            )
        )

    async def _refuse_control(self) -> None:
        """Over the control-message ceiling: ignored, counted, said at most once a second."""
        self.accounts.controls_refused += 1
        self.metrics.control_rejected.labels(str(ErrorCode.RATE_LIMITED)).inc()
        await self.outbox.say_once_a_second(
            "controls",
            ErrorCode.RATE_LIMITED,
            f"more than {self.settings.max_controls_per_s:g} control messages per second: extra "
            "ones are ignored (counted in 'controls_refused')",
        )

    # --- processing ------------------------------------------------------------------------
    async def run_notifier(self) -> None:
        await self.outbox.run_notifier()

    async def run_worker(self) -> None:
        """Process the latest frame, one at a time, until cancelled. A frame's drawing and
        sending overlap the next frame's inference: the model is never idle waiting for them."""
        while True:
            if not self.intake.waiting:
                await self.finish_answering()  # a send that failed ends the stream here
                await self.intake.arrival()
            self.idle.clear()
            try:
                await self.process_latest()
            finally:
                self.idle.set()

    async def process_latest(self) -> None:
        """Wait for a turn at Triton, then take the newest frame: while this stream waits behind
        the others, newer frames replace older ones here, never in Triton's queue."""
        frame: Frame | None = None
        try:
            async with self.gateway.turn(self.model) as turn:
                # the stream's choices when its turn begins (the model: the one the turn runs)
                request = self.choices.request(turn.model)
                frame = self._take_for(turn)
                if frame is None:
                    return
                rgb, depth, timings = await self._infer(turn, frame)
        except FrameError as exc:
            assert frame is not None  # raised by decoding or inference: the frame was taken
            await self.finish_answering()  # answers leave in frame order
            await self._fail(frame, exc)
            return
        # one frame drawing at a time, in order (the color range runs in frame order): the
        # previous one's answer is done before this one's starts, while the next frame infers
        await self.finish_answering()
        self.answering = asyncio.create_task(self._render_and_answer(frame, request, rgb, depth, timings))
        # its failure is raised where the worker awaits it; one never awaited (the stream ended
        # first) is retrieved here, not reported by asyncio as lost
        self.answering.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def finish_answering(self) -> None:
        """Wait for the frame being drawn and sent; its failure (a client gone, one that reads
        nothing) is raised here, in the worker, where it ends the stream."""
        task = self.answering
        if task is not None:
            try:
                await task
            finally:  # kept until it is done: drain() waits for it too
                if self.answering is task:
                    self.answering = None

    async def _render_and_answer(
        self,
        frame: Frame,
        request: RenderRequest,
        rgb: np.ndarray,
        answer: Inferred,
        timings: dict[str, float],
    ) -> None:
        try:
            rendered = await asyncio.to_thread(self.renderer.render, answer.depth, request, answer.intrinsics)
        except BadOutput as exc:  # the model's output could not be drawn
            await self._fail(frame, exc)
            return
        await self._answer(frame, request, rgb, rendered, {**timings, **rendered.timings_ms})

    def _take_for(self, turn: Turn) -> Frame | None:
        """The frame in the slot, now that its turn came; None when there is none or when it
        could not be answered within its deadline (dropped, and told)."""
        frame = self.intake.take()
        if frame is None:
            return None
        if not turn.can_finish_by(self._deadline(frame)):
            # it would answer after its deadline: nobody reads it
            self.outbox.count_dropped(frame.seq, DropReason.EXPIRED)
            self.metrics.frames_expired.inc()
            return None
        return frame

    def _deadline(self, frame: Frame) -> float:
        return frame.received_at + self.settings.request_timeout_s

    async def _infer(self, turn: Turn, frame: Frame) -> tuple[np.ndarray, Inferred, dict[str, float]]:
        """Decode (in a worker thread) and infer: (RGB, the model's answer, timings so far)."""
        timings = {"queue": _ms_since(frame.received_at)}
        start = time.perf_counter()
        rgb = await asyncio.to_thread(images.decode, frame.data, self.settings.max_pixels)
        timings["decode"] = _ms_since(start)
        start = time.perf_counter()
        depth = await turn.infer(rgb, self._deadline(frame))
        timings["infer"] = _ms_since(start)
        return rgb, depth, timings

    async def _fail(self, frame: Frame, exc: FrameError) -> None:
        """The frame's error, to the client with its seq, and counted; a Triton that went away,
        or that no longer serves the stream's model (unloaded, being reloaded), moves this
        stream to another endpoint where there is one (found by make chaos: a reload otherwise
        fails the stream's frames for as long as it takes)."""
        message = exc.message
        if isinstance(exc, ProtocolError):
            self.metrics.frames_rejected.labels(exc.code).inc()
        else:
            self.metrics.frames_failed.labels(exc.code).inc()
        if isinstance(exc, TritonUnavailable | ModelNotReady):
            moved = self.pool.move(self.gateway)
            if moved is not None:
                self.gateway = moved
                why = (
                    "went away" if isinstance(exc, TritonUnavailable) else f"does not serve {self.model} now"
                )
                message = f"the model server {why}; this stream moved to another one"
        await self.outbox.error(exc.code, message, frame.seq)

    async def _answer(
        self,
        frame: Frame,
        request: RenderRequest,
        rgb: np.ndarray,
        rendered: Rendered,
        timings: dict[str, float],
    ) -> None:
        timings["total"] = _ms_since(frame.received_at)
        # the stack's own time for this frame, for the page's estimates (bridge.default_model)
        outside = timings["total"] - timings.get("queue", 0.0) - timings.get("infer", 0.0)
        self.gateway.observed.add_stack(outside / 1e3)
        height, width = rgb.shape[:2]
        header = protocol.depth_message(
            seq=frame.seq,
            model=request.model,
            timings_ms=timings,
            dropped=self.accounts.dropped,
            width=width,
            height=height,
            random_weights=self.choices.random_weights_of.get(request.model, False),
            output=request.output,
            raw=rendered.raw,
            colormap=request.colormap,
            kind=spec_of(request.model).depth,
            display_range=rendered.display_range,
            alignment=rendered.alignment,
            camera=rendered.camera,
        )
        await self.outbox.send(header, *rendered.binaries, notice=True)  # the JSON and its binaries adjacent
        self.metrics.frames_answered.labels(request.model).inc()
        self.metrics.observe(timings)

    def close(self) -> None:
        self.pool.release(self.gateway)
        if self.answering is not None:  # the stream ended: nobody reads the answer
            self.answering.cancel()

    async def drain(self, close_code: int) -> None:
        """Shutting down: take no new frames, let the one in flight finish, then close."""
        self.intake.stop()
        try:
            async with asyncio.timeout(self.settings.drain_timeout_s):
                await self.idle.wait()
                if self.answering is not None:  # the last answer is sent before the close
                    await asyncio.wait([self.answering])
        except TimeoutError:
            log.warning("a frame was still in flight after %.1f s of draining", self.settings.drain_timeout_s)
        with contextlib.suppress(Exception):  # a client gone already has nothing to be told
            await self.outbox.send(notice=True)
        await self.outbox.close(close_code)
