"""The Starlette app: the page, the WebSocket stream, health, models and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge import protocol
from bridge.access import origin_allowed, token_ok
from bridge.colorize import COLORMAPS, DEFAULT_COLORMAP
from bridge.contract import CHECKPOINTS, INPUT_NAME, MODELS, OUTPUT_NAME
from bridge.metrics import BridgeMetrics
from bridge.pool import TritonPool
from bridge.protocol import ErrorCode
from bridge.session import SlowClient, StreamSession
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013


def _describe(name: str) -> dict:
    spec = MODELS[name]
    return {
        "name": name,
        "title": spec.title,
        "hub_id": spec.hub_id,
        "input": {"name": INPUT_NAME, "datatype": "UINT8", "shape": ["N", "H", "W", 3]},
        "output": {"name": OUTPUT_NAME, "datatype": "FP32", "shape": ["N", "H", "W"]},
        "checkpoint": spec.checkpoint,
        "precision": str(spec.precision),
        "network_input": {
            "size": spec.resize.size,
            "keep_aspect": spec.resize.keep_aspect,
            "multiple_of": spec.resize.multiple_of,
        },
    }


def create_app(settings: BridgeSettings) -> Starlette:
    metrics = BridgeMetrics()
    state: dict = {"draining": False}
    sessions: set[StreamSession] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = TritonPool(settings.triton_urls, settings.request_timeout_s, metrics, settings.max_in_flight)
        state["pool"] = pool
        gateway = await pool.first_ready() or pool.gateways[0]
        for info in await gateway.models():
            if info.ready:
                log.info(
                    "model %s ready%s",
                    info.name,
                    " (RANDOM WEIGHTS: smoke model)" if info.random_weights else "",
                )
            else:
                log.warning("model %s: %s (Triton at %s)", info.name, info.problem, settings.triton_url)
        yield
        await pool.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Ready when Triton is up (strict readiness: every loaded model ready) and serves the
        default model in conformance with the contract."""
        if state["draining"]:
            return JSONResponse({"status": "not ready", "reason": "shutting down"}, status_code=503)
        gateway = await state["pool"].first_ready()
        if gateway is None:
            return JSONResponse(
                {
                    "status": "not ready",
                    "reason": f"model server at {settings.triton_url} is unreachable or not ready",
                },
                status_code=503,
            )
        info = await gateway.model_info(settings.default_model)
        if not info.ready:
            return JSONResponse(
                {"status": "not ready", "reason": f"{info.name}: {info.problem}"}, status_code=503
            )
        return JSONResponse({"status": "ready"})

    async def api_models(request: Request) -> Response:
        gateway = await state["pool"].first_ready() or state["pool"].gateways[0]
        models = []
        for info in await gateway.models():
            if not info.ready and info.name not in CHECKPOINTS:
                continue  # an optional preset or INT8 twin this repository does not serve
            models.append(
                {
                    **_describe(info.name),
                    "ready": info.ready,
                    "random_weights": info.random_weights,
                    "problem": info.problem,
                }
            )
        return JSONResponse(
            {
                "models": models,
                "default_model": settings.default_model,
                "colormaps": list(COLORMAPS),
                "default_colormap": DEFAULT_COLORMAP,
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def refuse(websocket: WebSocket, code: ErrorCode, message: str, close_code: int) -> None:
        metrics.connections_refused.labels(str(code)).inc()
        await websocket.accept()
        await websocket.send_text(protocol.error_message(code, message))
        await websocket.close(close_code)

    async def stream(websocket: WebSocket) -> None:
        if not origin_allowed(websocket, settings):
            log.warning("refused a WebSocket from origin %s", websocket.headers.get("origin"))
            await refuse(
                websocket,
                ErrorCode.FORBIDDEN_ORIGIN,
                "this origin may not use the stream",
                CLOSE_POLICY_VIOLATION,
            )
            return
        if not token_ok(websocket, settings):
            await refuse(
                websocket,
                ErrorCode.UNAUTHORIZED,
                "a valid access token is required (?token=...)",
                CLOSE_POLICY_VIOLATION,
            )
            return
        if state["draining"]:
            await refuse(websocket, ErrorCode.SHUTTING_DOWN, "the server is shutting down", CLOSE_GOING_AWAY)
            return
        if len(sessions) >= settings.max_connections:
            await refuse(
                websocket,
                ErrorCode.BUSY,
                f"the server is at its limit of {settings.max_connections} streams; try later",
                CLOSE_TRY_AGAIN_LATER,
            )
            return
        await websocket.accept()
        session = StreamSession(websocket, state["pool"], settings, metrics)
        sessions.add(session)
        metrics.connections.inc()
        tasks = [asyncio.create_task(receive(websocket, session)), asyncio.create_task(session.run_worker())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if isinstance(task.exception(), SlowClient):
                    metrics.slow_clients.inc()
                    log.warning("closing a stream: %s", task.exception())
                elif task.exception() is not None and not isinstance(task.exception(), WebSocketDisconnect):
                    log.error("stream failed", exc_info=task.exception())
        finally:
            for task in tasks:
                task.cancel()  # cancels a gRPC call in flight too
            await asyncio.gather(*tasks, return_exceptions=True)
            sessions.discard(session)
            session.close()
            metrics.connections.dec()

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

    async def drain() -> None:
        """Before the server closes connections (SIGTERM): finish in-flight frames, close 1001."""
        state["draining"] = True
        await asyncio.gather(*(s.drain(CLOSE_GOING_AWAY) for s in list(sessions)), return_exceptions=True)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/models", api_models),
        Route("/metrics", metrics_endpoint),
        WebSocketRoute("/ws", stream),
        Mount("/", StaticFiles(directory=settings.web_dir, html=True)),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, middleware=[Middleware(TokenMiddleware, settings=settings)]
    )
    app.state.drain = drain
    app.state.metrics = metrics
    return app


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
