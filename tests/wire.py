"""The wire protocol as the integration tests read it from a real bridge: frames in, answers and
errors out, the HTTP endpoints and metrics."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request

import cv2
import numpy as np
from websockets.sync.client import connect

from tests.helpers import photo

RECV_TIMEOUT_S = 60


def jpeg(width: int, height: int, name: str = "astronaut") -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(photo(width, height, name), cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def recv_json(ws) -> dict:
    message = ws.recv(timeout=RECV_TIMEOUT_S)
    assert isinstance(message, str), "expected a text message"
    return json.loads(message)


@contextlib.contextmanager
def open_stream(url: str, **options):
    with connect(url, max_size=None, **options) as ws:
        hello = recv_json(ws)
        assert hello["type"] == "hello"
        yield ws


def next_answer(ws) -> tuple[dict, np.ndarray | None]:
    """The next depth answer (header and decoded JPEG) or error, skipping config acks."""
    while True:
        message = recv_json(ws)
        if message["type"] == "depth":
            data = ws.recv(timeout=RECV_TIMEOUT_S)
            assert isinstance(data, bytes), "a depth header must be followed by its JPEG"
            return message, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if message["type"] == "error":
            return message, None


def get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def metric(url: str, name: str) -> float:
    _, text = get(f"{url}/metrics")
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def wait_until(predicate, timeout_s: float = 30, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def bridge_up(port: int) -> bool:
    """Whether a bridge on this host answers its health check yet."""
    try:
        return get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    except OSError:
        return False
