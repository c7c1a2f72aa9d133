"""Bad input, table-driven, against a real uvicorn and a real Triton: each case gets its
expected outcome, a good frame is still answered afterwards, and a second client never notices."""

from __future__ import annotations

import io
import json
import logging
import struct
import time
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from starlette import status
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import photo, png_header
from tests.servers import RunningBridge, bridge_settings
from tests.wire import jpeg, next_answer, open_stream, png, recv_json

TOKEN = "s3cret-token-for-tests-0123456789"


def pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 24), color) for color in ("red", "blue")]
    return pil_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


GOOD_JPEG = jpeg(64, 48)
RGB = photo(40, 30)


@dataclass(frozen=True)
class Case:
    name: str
    message: bytes | str
    expect: str  # an error code, or "ok" (answered with depth)


CASES = [
    # binary frames
    Case("zero bytes", b"", "unsupported_format"),
    Case("random bytes", np.random.default_rng(1).bytes(5000), "unsupported_format"),
    Case("truncated JPEG", GOOD_JPEG[: len(GOOD_JPEG) // 2], "bad_image"),
    Case("JPEG start marker only", b"\xff\xd8\xff", "bad_image"),
    Case("JPEG garbage after the header", b"\xff\xd8\xff\xe0" + b"\x13" * 200 + b"\xff\xd9", "bad_image"),
    Case("truncated PNG", png(RGB)[:-20], "bad_image"),
    Case(
        "PNG whose header lies about the size",
        png_header(10, 10)[:16] + struct.pack(">II", 12, 10) + png_header(10, 10)[24:],
        "bad_image",
    ),
    Case("truncated WebP", pil_bytes(Image.fromarray(RGB), "WEBP")[:30], "bad_image"),
    Case("1x1 image", png(np.zeros((1, 1, 3), np.uint8)), "image_too_small"),
    Case("1x10000 image", png(np.zeros((10000, 1, 3), np.uint8)), "image_too_small"),
    Case("20000x20000 header (bomb)", png_header(20000, 20000), "image_too_large"),
    Case("5000x5000 header", png_header(5000, 5000), "image_too_large"),
    Case("GIF", pil_bytes(Image.fromarray(RGB), "GIF"), "unsupported_format"),
    Case("animated GIF", animated("GIF"), "unsupported_format"),
    Case("animated WebP", animated("WEBP"), "unsupported_format"),
    Case("BMP", pil_bytes(Image.fromarray(RGB), "BMP"), "unsupported_format"),
    Case("TIFF", pil_bytes(Image.fromarray(RGB), "TIFF"), "unsupported_format"),
    Case("an HTML page", b"<html><body>hi</body></html>", "unsupported_format"),
    Case("16-bit PNG (converted)", png((np.ones((30, 40, 3)) * 40000).astype(np.uint16)), "ok"),
    Case("grayscale PNG (converted)", png(np.full((30, 40), 99, np.uint8)), "ok"),
    Case("RGBA PNG (converted)", png(np.full((30, 40, 4), 99, np.uint8)), "ok"),
    Case("CMYK JPEG (converted)", pil_bytes(Image.fromarray(RGB).convert("CMYK"), "JPEG"), "ok"),
    Case("lossless WebP", pil_bytes(Image.fromarray(RGB), "WEBP", lossless=True), "ok"),
    # text messages
    Case("text where an image is expected", "hello", "bad_json"),
    Case("invalid JSON", '{"type": "config", "model": ', "bad_json"),
    Case("JSON array", "[1, 2, 3]", "bad_json"),
    Case("NUL bytes", "\x00\x00\x00", "bad_json"),
    Case("deeply nested JSON", "[" * 2000 + "]" * 2000, "bad_json"),
    Case("unknown control type", '{"type": "shutdown"}', "unknown_type"),
    Case("unknown field", '{"type": "config", "fps": 60}', "unknown_field"),
    Case("unknown model", '{"type": "config", "model": "yolo"}', "unknown_model"),
    Case(
        "path traversal in the model name",
        '{"type": "config", "model": "../../../etc/passwd"}',
        "unknown_model",
    ),
    Case("model name that is a number", '{"type": "config", "model": 3}', "unknown_model"),
    Case("unknown colormap", '{"type": "config", "colormap": "hotdog"}', "unknown_colormap"),
    Case("unknown output", '{"type": "config", "output": "depth"}', "unknown_output"),
    Case(
        "oversize control message", json.dumps({"type": "config", "model": "x" * 5000}), "message_too_large"
    ),
]


@pytest.fixture(scope="module")
def strict_bridge(triton):
    """A bridge with a small message limit, so the oversize case stays cheap."""
    settings = bridge_settings(triton.settings.grpc_url, max_message_bytes=1024 * 1024)
    with RunningBridge(settings) as running:
        yield running


@pytest.fixture(scope="module")
def witness(strict_bridge):
    """A second client streaming on its own connection through every case."""
    with open_stream(strict_bridge.ws_url) as ws:
        yield ws


def answered_by(ws, message: bytes | str) -> str:
    ws.send(message)
    try:
        header, _ = next_answer(ws)
    except ConnectionClosed as closed:
        return f"close:{closed.rcvd.code if closed.rcvd else 'none'}"
    return "ok" if header["type"] == "depth" else header["code"]


def test_the_cases_cover_every_frame_and_control_error_code():
    """What the cases check, not how many there are: every error code a bad frame or a bad
    control message can earn is expected by at least one case (the closes: tests below)."""
    expected = {case.expect for case in CASES}
    frame_codes = {"bad_image", "unsupported_format", "image_too_large", "image_too_small"}
    control_codes = {"bad_json", "unknown_type", "unknown_field", "unknown_model", "unknown_colormap"}
    control_codes |= {"unknown_output", "message_too_large"}
    assert frame_codes | control_codes <= expected, (frame_codes | control_codes) - expected
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(strict_bridge, witness, case):
    with open_stream(strict_bridge.ws_url) as ws:
        assert answered_by(ws, case.message) == case.expect
        assert answered_by(ws, GOOD_JPEG) == "ok", "the same connection still answers a good frame"
    with open_stream(strict_bridge.ws_url) as fresh:
        assert answered_by(fresh, GOOD_JPEG) == "ok", "a new connection is answered"
    witness.send(GOOD_JPEG)
    header, image = next_answer(witness)
    assert header["type"] == "depth" and image.shape == (48, 64, 3), "the other client never noticed"


def read_frame(sock) -> tuple[int, bytes]:
    """One server frame (servers do not mask): (opcode, payload)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", exactly(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", exactly(8))
    return first & 0x0F, exactly(length)


def websocket_handshake(port: int):
    """A raw socket past the WebSocket handshake: the test writes frames byte by byte."""
    import base64
    import os
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def close_code_after(sock) -> int:
    while True:
        opcode, payload = read_frame(sock)
        if opcode == 0x8:
            return struct.unpack(">H", payload[:2])[0]


OVERSIZE_ATTEMPTS = 12


def test_a_whole_oversize_message_closes_1009_every_time(strict_bridge):
    """A client that writes a whole 2 MiB frame (the limit is 1 MiB) and only then reads must
    see the 1009, every time: the server reads and discards the rest before closing, instead of
    closing under the client's feet (which resets the connection and loses the close frame)."""
    import os

    limit = strict_bridge.settings.max_message_bytes
    payload = os.urandom(2 * limit)
    frame = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", len(payload)) + os.urandom(4) + payload
    codes = []
    for _ in range(OVERSIZE_ATTEMPTS):
        with websocket_handshake(strict_bridge.settings.port) as sock:
            sock.sendall(frame)  # raises ConnectionResetError / BrokenPipeError if cut off
            codes.append(close_code_after(sock))
    assert codes == [status.WS_1009_MESSAGE_TOO_BIG] * OVERSIZE_ATTEMPTS
    with open_stream(strict_bridge.ws_url) as fresh:
        assert answered_by(fresh, GOOD_JPEG) == "ok"


def test_refused_clients_draining_at_once_have_a_ceiling(strict_bridge, monkeypatch):
    """Past MAX_DRAINING sockets draining at once, a refused client is cut off at once: it still
    reads its 1009, but what it writes next is refused instead of read for seconds."""
    import os
    import time

    from bridge import websocket_protocol

    monkeypatch.setattr(websocket_protocol, "MAX_DRAINING", 1)
    monkeypatch.setattr(websocket_protocol, "DRAIN_TIMEOUT_S", 10.0)
    limit = strict_bridge.settings.max_message_bytes
    header = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 2 * limit) + os.urandom(4)
    port = strict_bridge.settings.port
    with websocket_handshake(port) as first, websocket_handshake(port) as second:
        first.sendall(header)
        assert close_code_after(first) == status.WS_1009_MESSAGE_TOO_BIG  # and now draining: the one place
        second.sendall(header)
        assert close_code_after(second) == status.WS_1009_MESSAGE_TOO_BIG
        first.sendall(os.urandom(limit))  # still read and discarded
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(100):
                second.sendall(os.urandom(64 * 1024))
                time.sleep(0.01)
    deadline = time.monotonic() + 5
    while websocket_protocol.DrainingCloseProtocol.draining and time.monotonic() < deadline:
        time.sleep(0.05)
    assert websocket_protocol.DrainingCloseProtocol.draining == 0, "a closed socket still counted"


def test_an_announced_oversize_message_closes_1009(strict_bridge):
    """The header alone is enough: the server refuses a frame it has not received yet."""
    import os

    with websocket_handshake(strict_bridge.settings.port) as sock:
        sock.sendall(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 2 * 1024 * 1024) + os.urandom(4))
        assert close_code_after(sock) == status.WS_1009_MESSAGE_TOO_BIG


def test_foreign_origin_is_refused(strict_bridge):
    with connect(strict_bridge.ws_url, origin="http://evil.example") as ws:
        error = recv_json(ws)
        assert error["code"] == "forbidden_origin"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == status.WS_1008_POLICY_VIOLATION


def test_same_origin_and_configured_origin_are_allowed(triton):
    settings = bridge_settings(triton.settings.grpc_url, allowed_origins="https://depth.example.com")
    with RunningBridge(settings) as running:
        for origin in (running.url, "https://depth.example.com"):
            with connect(running.ws_url, origin=origin) as ws:
                assert recv_json(ws)["type"] == "hello"


@pytest.fixture(scope="module")
def token_bridge(triton):
    with RunningBridge(bridge_settings(triton.settings.grpc_url, token=TOKEN)) as running:
        yield running


@pytest.mark.parametrize("query", ["", "?token=wrong-token-wrong-token"])
def test_missing_or_wrong_token_is_refused(token_bridge, query):
    with connect(token_bridge.ws_url + query) as ws:
        assert recv_json(ws)["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == status.WS_1008_POLICY_VIOLATION
    from tests.wire import get

    assert get(f"{token_bridge.url}/api/models{query}")[0] == 401


def test_right_token_streams(token_bridge):
    from tests.wire import get

    assert get(f"{token_bridge.url}/api/models?token={TOKEN}")[0] == 200
    with open_stream(f"{token_bridge.ws_url}?token={TOKEN}") as ws:
        assert answered_by(ws, GOOD_JPEG) == "ok"
    with open_stream(token_bridge.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert answered_by(ws, GOOD_JPEG) == "ok"


def test_flood_is_rate_limited_and_counted(triton):
    flood = 40
    settings = bridge_settings(triton.settings.grpc_url, max_fps=5.0)
    with RunningBridge(settings) as running, open_stream(running.ws_url) as ws:
        for _ in range(flood):
            ws.send(GOOD_JPEG)
        time.sleep(1.5)  # the bucket refills: the next frame is within the limit
        ws.send(GOOD_JPEG)
        codes, answers = [], []
        while not answers or answers[-1]["seq"] != flood:
            header, _ = next_answer(ws)
            if header["type"] == "depth":
                answers.append(header)
            else:
                codes.append(header["code"])
    assert codes.count("rate_limited") == 1, "one clear error per second, not one per frame"
    assert answers[-1]["dropped"] >= flood - 5, "frames over the limit are dropped and counted"
    assert len(answers) + answers[-1]["dropped"] == flood + 1, "every frame answered or counted"


@pytest.mark.parametrize("level", ["info", "debug", "trace"])
def test_the_token_never_reaches_a_log(triton, capfd, level):
    settings = bridge_settings(triton.settings.grpc_url, token=TOKEN, log_level=level)
    with RunningBridge(settings) as running:
        logging.getLogger("uvicorn.error").setLevel(level.upper() if level != "trace" else 5)
        with open_stream(f"{running.ws_url}?token={TOKEN}") as ws:
            assert answered_by(ws, GOOD_JPEG) == "ok"
        with open_stream(running.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert answered_by(ws, GOOD_JPEG) == "ok"
        from tests.wire import get

        assert get(f"{running.url}/api/models?token={TOKEN}")[0] == 200
    logged = capfd.readouterr()
    text = logged.out + logged.err
    assert "WebSocket /ws?token=<redacted>" in text, "the access line is logged, redacted"
    assert TOKEN not in text
