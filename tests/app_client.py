"""The real app in-process through Starlette's TestClient, its Triton a stand-in for
tritonclient's aio client (tests/fake_triton.py): the fast tests' way in."""

from __future__ import annotations

import cv2
import numpy as np
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.settings import BridgeSettings
from tests.fake_triton import FakeTriton


def jpeg(width: int = 64, height: int = 48) -> bytes:
    image = np.dstack([np.linspace(0, 255, width, dtype=np.uint8)[None].repeat(height, 0)] * 3)
    return cv2.imencode(".jpg", image)[1].tobytes()


def make_client(fake: FakeTriton, **overrides) -> TestClient:
    settings = BridgeSettings(triton_url="fake:8001", **overrides)
    return TestClient(create_app(settings, client_factory=lambda url: fake))


def hello(ws) -> dict:
    message = ws.receive_json()
    assert message["type"] == "hello"
    return message


def answer(ws) -> tuple[dict, bytes | None]:
    """The next depth answer or error (dropped notices, which may come first, are skipped)."""
    header = ws.receive_json()
    while header["type"] == "dropped":
        header = ws.receive_json()
    if header["type"] != "depth":
        return header, None
    return header, ws.receive_bytes()


def closed_with(ws) -> int:
    message = ws.receive()
    assert message["type"] == "websocket.close", message
    return message["code"]
