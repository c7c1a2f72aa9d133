"""The bridge on uvicorn: draining shutdown, and serving until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import math
import signal

import uvicorn

from bridge.access import redact_server_logs
from bridge.app import AppState, create_app
from bridge.settings import BridgeSettings
from bridge.websocket_protocol import DrainingCloseProtocol


class DrainingServer(uvicorn.Server):
    """uvicorn closes WebSockets with 1012 at shutdown; first let in-flight frames finish and
    close each stream with 1001 (going away), as a client expects from a server going down."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state  # the app's: its streams to drain, its catalog (make demo sets what is coming)

    async def shutdown(self, sockets=None) -> None:
        await self.state.drain()
        await super().shutdown(sockets)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_until_stopped(server: uvicorn.Server) -> None:
    """Serve until Ctrl-C or SIGTERM, then return normally.

    uvicorn shuts down gracefully, then re-raises the signal it caught with the handler that was
    there before it; with this one, that ends here instead of killing the process mid-cleanup."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


def build_server(settings: BridgeSettings) -> DrainingServer:
    config = uvicorn_config(settings)
    return DrainingServer(config, config.app.state.depthstream)  # type: ignore[union-attr]  # create_app's


def uvicorn_config(settings: BridgeSettings) -> uvicorn.Config:
    # The websockets library's sans-I/O protocol (not the deprecated legacy API) enforces the
    # size limit (close 1009); DrainingCloseProtocol makes sure the client reads that close.
    # No per-message compression:
    # frames are already JPEG, and deflate costs CPU and memory (and invites zip bombs).
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws=DrainingCloseProtocol,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,
        log_level=str(settings.log_level),  # uvicorn looks the name up in a dict of str
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s) + 2,
    )
    redact_server_logs()  # after uvicorn configured its loggers: ?token=... never reaches a log
    return config
