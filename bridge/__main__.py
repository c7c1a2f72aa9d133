"""``python -m bridge``: serve the page and the WebSocket stream on uvicorn."""

from __future__ import annotations

import logging
import sys

import cv2
import uvicorn

from bridge.app import create_app
from bridge.settings import BridgeSettings, SettingsError, parse_settings


def uvicorn_config(settings: BridgeSettings) -> uvicorn.Config:
    # ws="websockets-sansio": the websockets library's own protocol, which enforces the size
    # limit (close 1009) and is not the deprecated legacy API; no per-message compression:
    # frames are already JPEG, and deflate costs CPU and memory (and invites zip bombs).
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cv2.setNumThreads(1)  # leave the cores to inference; per-frame OpenCV work is small
    print(
        f"depthstream bridge: open http://{settings.host}:{settings.port}/ (Triton at {settings.triton_url})",
        flush=True,
    )
    uvicorn.Server(uvicorn_config(settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
