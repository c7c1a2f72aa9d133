"""The Starlette app: the page, the WebSocket stream, health, models and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge import protocol
from bridge.colorize import COLORMAPS, DEFAULT_COLORMAP
from bridge.contract import CHECKPOINTS, INPUT_NAME, MODELS, OUTPUT_NAME
from bridge.metrics import BridgeMetrics
from bridge.protocol import ErrorCode
from bridge.session import StreamSession
from bridge.settings import BridgeSettings
from bridge.triton import TritonGateway

log = logging.getLogger(__name__)

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
    state: dict = {"connections": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = TritonGateway(settings.triton_url, settings.request_timeout_s)
        state["gateway"] = gateway
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
        await gateway.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        gateway: TritonGateway = state["gateway"]
        models = await gateway.models()
        not_ready = {m.name: m.problem for m in models if not m.ready}
        if not_ready:
            return JSONResponse({"status": "not ready", "reasons": not_ready}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def api_models(request: Request) -> Response:
        gateway: TritonGateway = state["gateway"]
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

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        if state["connections"] >= settings.max_connections:
            await websocket.send_text(
                protocol.error_message(
                    ErrorCode.BUSY,
                    f"the server is at its limit of {settings.max_connections} streams; try later",
                )
            )
            await websocket.close(CLOSE_TRY_AGAIN_LATER)
            return
        state["connections"] += 1
        metrics.connections.inc()
        session = StreamSession(websocket, state["gateway"], settings, metrics)
        worker = asyncio.create_task(session.run_worker())
        try:
            await session.start()
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    session.on_frame(message["bytes"])
                elif message.get("text") is not None:
                    await session.on_control(message["text"])
        except WebSocketDisconnect:
            pass
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            state["connections"] -= 1
            metrics.connections.dec()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/models", api_models),
        Route("/metrics", metrics_endpoint),
        WebSocketRoute("/ws", stream),
        Mount("/", StaticFiles(directory=settings.web_dir, html=True)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
