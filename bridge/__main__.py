"""``python -m bridge``: serve the page and the WebSocket stream on uvicorn."""

from __future__ import annotations

import logging
import sys

import cv2

from bridge.server import build_server, run_until_stopped
from bridge.settings import SettingsError, parse_settings


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
    query = "?token=<your token>" if settings.token else ""
    print(
        f"depthstream bridge: open http://{settings.host}:{settings.port}/{query} "
        f"(Triton at {settings.triton_url})",
        flush=True,
    )
    run_until_stopped(build_server(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
