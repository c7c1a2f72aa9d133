"""The seed corpus, from the inputs the tests use: ``python -m tests.fuzz.seeds`` writes
tests/fuzz/corpus/TARGET/ (committed; the engine adds what it finds under build/fuzz/)."""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = Path(__file__).resolve().parents[2]


def _photo(width: int, height: int) -> np.ndarray:
    from tests.helpers import photo

    return photo(width, height)


def control() -> list[bytes]:
    messages = [
        {"type": "config", "model": "depth_anything_v2_small"},
        {"type": "config", "colormap": "turbo", "output": "points", "steady": True},
        {"type": "config", "new_scene": True, "output": "depth16"},
        {"type": "config", "model": 7},
        {"type": "hello"},
        [1, 2, 3],
    ]
    return [json.dumps(m).encode() for m in messages] + [b'{"type": "config", "steady": "yes"', b"{}" * 3000]


def image() -> list[bytes]:
    from PIL import Image

    bgr = cv2.cvtColor(_photo(32, 24), cv2.COLOR_RGB2BGR)
    out = [cv2.imencode(ext, bgr)[1].tobytes() for ext in (".jpg", ".png", ".webp")]
    out.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    out.append(cv2.imencode(".png", np.full((8, 12), 128, np.uint8))[1].tobytes())
    out.append(cv2.imencode(".png", np.full((8, 12, 4), 200, np.uint8))[1].tobytes())
    out.append(cv2.imencode(".png", np.full((8, 12, 3), 40000, np.uint16))[1].tobytes())
    out.append(cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes())
    buffer = BytesIO()
    Image.fromarray(_photo(16, 12)).convert("CMYK").save(buffer, "JPEG")
    out.append(buffer.getvalue())
    return out


def websocket() -> list[bytes]:
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    jpeg, text = image()[0], control()[0].decode()
    out = []
    for send in (
        lambda c: c.send_text(text.encode()),
        lambda c: c.send_binary(jpeg),
        lambda c: (
            c.send_text(text[:10].encode(), fin=False),
            c.send_continuation(text[10:].encode(), fin=True),
        ),
        lambda c: (c.send_ping(b"hi"), c.send_binary(jpeg), c.send_close(1000, "bye")),
    ):
        client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
        client.send_request(client.connect())
        client.data_to_send()  # the handshake: the target sends its own
        from websockets.protocol import State

        client.state = State.OPEN
        send(client)
        out.append(b"".join(client.data_to_send()))
    return out


def settings() -> list[bytes]:
    return [
        b"--port\x008080\x00--max-fps\x0015",
        b"--triton-url\x00127.0.0.1:8001\x01BRIDGE_REQUEST_TIMEOUT_S=2.5\nBRIDGE_MAX_STREAMS=4",
        b"\x01BRIDGE_MAX_PIXELS=0",
        b"--model\x00all\x00--int8\x00never\x01EXPORT_FORCE=true",
        b"--checkpoint\x00Intel/dpt-large\x00--name\x00x\x00--max-depth\x00-1",
    ]


def catalog() -> list[bytes]:
    from depthstream.contract import MODELS
    from export import configs

    out = [path.read_bytes() for path in sorted((ROOT / "tests" / "configs").glob("*.pbtxt"))]
    for name in ("depth_anything_v2_small", "depth_anything_3_small", "depth_anything_v2_small_int8"):
        out.append(configs.to_text(configs.onnxruntime_config(MODELS[name], True)).encode())
    return out


def backend() -> list[bytes]:
    rng = np.random.default_rng(0)

    def request(dtype: int, shape: tuple[int, ...], cancelled: bool = False) -> bytes:
        values = rng.integers(0, 255, max(int(np.prod(shape)), 1), dtype=np.uint8).tobytes()
        return bytes([dtype, len(shape), *shape]) + values + (b"\xff" if cancelled else b"\x00")

    return [
        request(0, (1, 8, 8, 3)),
        request(0, (2, 12, 16, 3)),
        request(0, (1, 1, 64, 3)),
        request(1, (1, 8, 8, 3)),
        request(0, (1, 8, 8)),
        request(0, (1, 8, 8, 3), cancelled=True),
    ]


def main() -> None:
    for target, seeds in (
        ("control", control),
        ("image", image),
        ("websocket", websocket),
        ("settings", settings),
        ("catalog", catalog),
        ("backend", backend),
    ):
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for data in seeds():
            (directory / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


if __name__ == "__main__":
    main()
