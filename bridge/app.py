"""The Starlette app: the page, the WebSocket stream, health, models and metrics.

Endpoints are module-level functions; what they share lives in one typed ``AppState`` (on
``app.state.depthstream``), built by ``create_app`` and completed by the lifespan, which opens
the Triton pool. Pass ``client_factory`` to put a stand-in for tritonclient's aio client behind
the real gateway (the fast tests do; production never does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge import protocol
from bridge.access import origin_allowed, token_ok
from bridge.catalog import ModelCatalog, ModelInfo
from bridge.default_model import AUTO, LIVE_FPS, DefaultChoice, choose_default, estimated_fps
from bridge.metrics import BridgeMetrics
from bridge.outbox import SlowClient
from bridge.own_work import own_work_ms
from bridge.pool import TritonPool
from bridge.protocol import CLOSE_FOR, CloseCode, ErrorCode
from bridge.session import StreamSession
from bridge.settings import BridgeSettings
from bridge.triton import TritonGateway
from depthstream.contract import CHECKPOINTS, INPUT_NAME, INTRINSICS_NAME, MODELS, OUTPUT_NAME
from depthstream.render.colorize import COLORMAPS, colormap_stops

log = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: BridgeSettings
    metrics: BridgeMetrics
    client_factory: Callable | None = None
    pool: TritonPool | None = None
    sessions: set[StreamSession] = field(default_factory=set)
    draining: bool = False
    catalog: ModelCatalog = field(default_factory=ModelCatalog)

    @property
    def triton(self) -> TritonPool:
        """The endpoints' pool, made by the lifespan before the first request is served."""
        if self.pool is None:
            raise RuntimeError("the bridge's lifespan has not started")
        return self.pool

    async def drain(self) -> None:
        """Before the server closes connections (SIGTERM): finish in-flight frames, close 1001."""
        self.draining = True
        await asyncio.gather(
            *(s.drain(CloseCode.GOING_AWAY) for s in list(self.sessions)), return_exceptions=True
        )


def state_of(connection: HTTPConnection) -> AppState:
    return connection.app.state.depthstream


async def default_choice(state: AppState, gateway: TritonGateway) -> DefaultChoice:
    """The model streams start on: configured, or chosen from the served models' speeds."""
    if state.settings.default_model != AUTO:
        return choose_default([], state.settings.default_model)
    return choose_default(await state.catalog.get(gateway), stack_ms=gateway.observed.stack_ms())


def describe(info: ModelInfo) -> dict:
    """A model as /api/models lists it: what its served config records (the repository is the
    catalog), or the curated spec of one that is not served."""
    spec = info.spec or MODELS.get(info.name)
    about: dict = {
        "name": info.name,
        "input": {"name": INPUT_NAME, "datatype": "UINT8", "shape": ["N", "H", "W", 3]},
        "output": {"name": OUTPUT_NAME, "datatype": "FP32", "shape": ["N", "H", "W"]},
    }
    if spec is None:  # served, but its config says nothing the bridge can use
        return {
            **about,
            "title": info.name,
            "hub_id": None,
            "checkpoint": None,
            "precision": None,
            "depth": None,
            "network_input": None,
            "added": True,
            "intrinsics": False,
        }
    return {
        **about,
        "title": spec.title,
        "hub_id": spec.hub_id,
        "checkpoint": spec.checkpoint,
        "precision": str(spec.precision),
        "depth": spec.depth_meaning,  # relative inverse depth, or metres
        "network_input": {
            "size": spec.resize.size,
            "rule": str(spec.resize.rule),
            "keep_aspect": spec.resize.keep_aspect,
            "multiple_of": spec.resize.multiple_of,
            "max_side": spec.resize.max_side,
        },
        "added": spec.added,  # exported with --checkpoint, not one of the curated models
        # it also returns INTRINSICS, the camera it estimates (the depth header's "camera")
        "intrinsics": spec.intrinsics,
        **({"outputs": [OUTPUT_NAME, INTRINSICS_NAME]} if spec.intrinsics else {}),
    }


# --- HTTP ---------------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when Triton is up (strict readiness: every loaded model ready) and serves the
    default model in conformance with the contract."""
    state = state_of(request)
    if state.draining:
        return JSONResponse({"status": "not ready", "reason": "shutting down"}, status_code=503)
    gateway = await state.triton.first_ready()
    if gateway is None:
        reason = f"model server at {state.settings.triton_url} is unreachable or not ready"
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    info = await gateway.model_info((await default_choice(state, gateway)).model)
    if not info.ready:
        return JSONResponse(
            {"status": "not ready", "reason": f"{info.name}: {info.problem}"}, status_code=503
        )
    return JSONResponse({"status": "ready"})


async def api_models(request: Request) -> Response:
    state = state_of(request)
    gateway = await state.triton.first_ready() or state.triton.gateways[0]
    stack_ms = gateway.observed.stack_ms()
    models = [
        {
            **describe(info),
            "ready": info.ready,
            "coming": not info.ready and info.name in state.catalog.coming,
            "random_weights": info.random_weights,
            "problem": info.problem,
            # the model alone on one 640x480 frame where it is served, and the page's rate from it
            "ms_per_frame": info.ms_per_frame,
            "estimated_fps": estimated_fps(info.ms_per_frame, stack_ms),
            "measured_on": info.measured_on,
            # set when the figure above follows live traffic: what was recorded
            "recorded_ms": info.recorded_ms,
        }
        for info in await state.catalog.get(gateway)
        # an optional preset or INT8 twin that this repository does not serve is left out; a
        # served model that breaks the contract is listed with the reason
        if info.ready
        or info.mismatch
        or info.failed
        or info.too_slow
        or info.name in CHECKPOINTS
        or info.name in state.catalog.coming
    ]
    choice = await default_choice(state, gateway)
    return JSONResponse(
        {
            "models": models,
            "default_model": choice.model,
            "default_reason": choice.reason,
            "live_fps": LIVE_FPS,
            "colormaps": list(COLORMAPS),
            # each colormap from far to near, for the page's colorbar
            "colormap_stops": {name: colormap_stops(name) for name in COLORMAPS},
            "default_colormap": state.settings.default_colormap,
        }
    )


async def metrics_endpoint(request: Request) -> Response:
    return Response(state_of(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# --- the stream ---------------------------------------------------------------------------------
async def refuse(websocket: WebSocket, code: ErrorCode, message: str) -> None:
    """Say why, then close with the code the protocol pairs with it (depthstream.wire.CLOSE_FOR)."""
    state_of(websocket).metrics.connections_refused.labels(str(code)).inc()
    await websocket.accept()
    await websocket.send_text(protocol.error_message(code, message))
    await websocket.close(CLOSE_FOR[code])


def refusal(websocket: WebSocket) -> tuple[ErrorCode, str] | None:
    """Why this connection may not stream (code, message), or None."""
    state = state_of(websocket)
    settings = state.settings
    if not origin_allowed(websocket, settings):
        log.warning("refused a WebSocket from origin %s", websocket.headers.get("origin"))
        return ErrorCode.FORBIDDEN_ORIGIN, "this origin may not use the stream"
    if not token_ok(websocket, settings):
        message = "a valid access token is required: open the page as .../?token=YOUR_TOKEN"
        return ErrorCode.UNAUTHORIZED, message
    if state.draining:
        return ErrorCode.SHUTTING_DOWN, "the server is shutting down"
    if len(state.sessions) >= settings.max_connections:
        message = f"the server is at its limit of {settings.max_connections} streams; try later"
        return ErrorCode.BUSY, message
    return None


async def stream(websocket: WebSocket) -> None:
    refused = refusal(websocket)
    if refused is not None:
        await refuse(websocket, *refused)
        return
    state = state_of(websocket)
    # counted before the first await: a burst of handshakes cannot all pass the limit
    session = StreamSession(websocket, state.triton, state.settings, state.metrics)
    state.sessions.add(session)
    state.metrics.connections.inc()
    tasks: list[asyncio.Task] = []
    try:
        await websocket.accept()
        session.ready_models = [info.name for info in await state.catalog.get(session.gateway) if info.ready]
        session.model = (await default_choice(state, session.gateway)).model
        tasks = [
            asyncio.create_task(receive(websocket, session)),
            asyncio.create_task(session.run_worker()),
            asyncio.create_task(session.run_notifier()),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = task.exception()
            if isinstance(error, SlowClient):
                state.metrics.slow_clients.inc()
                log.warning("closing a stream: %s", error)
            elif error is not None and not isinstance(error, WebSocketDisconnect):
                log.error("stream failed", exc_info=error)
    finally:
        # the books first: if this handler is cancelled too (a server closing), the await
        # below is where it ends
        state.sessions.discard(session)
        session.close()
        state.metrics.connections.dec()
        for task in tasks:
            task.cancel()  # cancels a gRPC call in flight too
        # wait, not gather: gather turned a cancellation of this handler into a stray
        # CancelledError about 1 time in 10 (seen with Starlette's TestClient)
        if tasks:
            await asyncio.wait(tasks)


async def receive(websocket: WebSocket, session: StreamSession) -> None:
    await session.start()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await session.on_frame(message["bytes"])
        elif message.get("text") is not None:
            await session.on_control(message["text"])


# --- the app ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state: AppState = app.state.depthstream
    settings = state.settings
    await asyncio.to_thread(own_work_ms)  # the page's estimates: timed here once, off the event loop
    loop = asyncio.get_running_loop()  # the scrape may come from another thread: name the loop
    state.metrics.asyncio_tasks.set_function(lambda: len(asyncio.all_tasks(loop)))
    state.pool = TritonPool(
        settings.triton_urls,
        settings.request_timeout_s,
        state.metrics,
        settings.max_in_flight,
        state.client_factory,
        settings.shared_memory_for,
        settings.triton_admin_key,
    )
    gateway = await state.pool.first_ready() or state.pool.gateways[0]
    for info in await state.catalog.get(gateway):
        if info.ready:
            log.info(
                "model %s ready%s", info.name, " (RANDOM WEIGHTS: smoke model)" if info.random_weights else ""
            )
        elif info.name in state.catalog.coming:
            log.info("model %s: coming (make demo exports it while the page streams)", info.name)
        elif info.name in CHECKPOINTS or info.failed or info.mismatch or info.too_slow:
            log.warning("model %s: %s (Triton at %s)", info.name, info.problem, settings.triton_url)
        else:  # an optional preset or INT8 twin (the export drops a twin that is not faster)
            log.info("model %s: not served here (optional; `make export` says why)", info.name)
    yield
    await state.pool.close()


def create_app(settings: BridgeSettings, client_factory: Callable | None = None) -> Starlette:
    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/models", api_models),
        Route("/metrics", metrics_endpoint),
        WebSocketRoute("/ws", stream),
        Mount("/", RevalidatedStaticFiles(directory=settings.web_dir, html=True)),
    ]
    middleware = [
        Middleware(TokenMiddleware, settings=settings),
        # the page's files compressed on the fly (three.js: 2.1 MB, ~480 KB gzipped), no build step
        Middleware(GZipMiddleware, minimum_size=1024),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.depthstream = AppState(settings, BridgeMetrics(), client_factory)
    return app


class RevalidatedStaticFiles(StaticFiles):
    """The page's files, asked again on every load but answered 304 Not Modified while unchanged
    (their ETag and Last-Modified): a new version is never hidden behind a stale cache."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


class TokenMiddleware:
    """``/api/*`` needs the access token when one is set (401 otherwise); ``/ws`` checks its own."""

    def __init__(self, app, settings: BridgeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send) -> None:
        api = scope["type"] == "http" and scope["path"].startswith("/api/")
        if api and not token_ok(HTTPConnection(scope), self.settings):
            response = JSONResponse(
                {"error": "unauthorized", "message": "a valid access token is required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
