"""Raw depth on the stream: the `output` field of `config`, its default, its errors, and the
values themselves (fast: a stand-in Triton whose depth is known exactly)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.settings import BridgeSettings
from depthstream.render import raw_depth
from tests.app_client import hello, jpeg
from tests.fake_triton import FakeTriton


@pytest.fixture
def fake() -> FakeTriton:
    fake = FakeTriton()
    # a depth with a known range and detail in both directions, negative values included
    fake.output = lambda shape: np.linspace(-3.0, 7.5, shape[1] * shape[2], dtype=np.float32).reshape(
        1, shape[1], shape[2]
    )
    return fake


@pytest.fixture
def client(fake):
    with TestClient(
        create_app(BridgeSettings(triton_url="fake:8001"), client_factory=lambda url: fake)
    ) as client:
        yield client


def frame_answer(ws) -> tuple[dict, list[bytes]]:
    header = ws.receive_json()
    assert header["type"] == "depth", header
    return header, [ws.receive_bytes() for _ in header["binary"]]


def configure(ws, **fields) -> dict:
    ws.send_text(json.dumps({"type": "config", **fields}))
    return ws.receive_json()


def test_the_default_stays_one_colorized_jpeg(client):
    with client.websocket_connect("/ws") as ws:
        greeting = hello(ws)
        assert greeting["output"] == "color" and greeting["outputs"] == ["color", "raw", "both", "points"]
        ws.send_bytes(jpeg(64, 48))
        header, binaries = frame_answer(ws)
        assert header["binary"] == ["jpeg"] and "raw" not in header
        assert cv2.imdecode(np.frombuffer(binaries[0], np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
        assert configure(ws)["output"] == "color"


def test_raw_depth_gives_the_values_back_within_the_quantization_step(client, fake):
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        assert configure(ws, output="raw")["output"] == "raw"
        ws.send_bytes(jpeg(64, 48))
        header, (payload,) = frame_answer(ws)
    raw = header["raw"]
    assert header["binary"] == ["uint16le"] and raw["encoding"] == "uint16le"
    assert (raw["width"], raw["height"]) == (64, 48) and len(payload) == 64 * 48 * 2
    truth = fake.output((1, 48, 64, 3))[0]
    assert (raw["min"], raw["max"]) == (pytest.approx(-3.0), pytest.approx(7.5))
    step = (raw["max"] - raw["min"]) / 65535
    # docs/protocol.md's reader: numpy alone
    q = np.frombuffer(payload, "<u2").reshape(raw["height"], raw["width"])
    depth = raw["min"] + q * ((raw["max"] - raw["min"]) / 65535)
    assert np.abs(depth - truth).max() <= step / 2 * (1 + 1e-9)
    assert "raw" in header["timings_ms"] and "encode" not in header["timings_ms"]


def test_both_sends_the_jpeg_then_the_raw_depth(client):
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        configure(ws, output="both")
        ws.send_bytes(jpeg(64, 48))
        header, (image, payload) = frame_answer(ws)
    assert header["binary"] == ["jpeg", "uint16le"]
    assert cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert len(payload) == 64 * 48 * 2


def test_points_are_every_second_pixel_of_the_raw_depth_at_a_quarter_of_the_bytes(client, fake):
    """What the 3D view asks for: the depth of the pixels it draws (one per 2x2), nothing else;
    the same points as the full raw depth's, within the 16-bit step of each."""
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        configure(ws, output="raw")
        ws.send_bytes(jpeg(65, 47))  # odd sides: the grid rounds up
        full_header, (full,) = frame_answer(ws)
        configure(ws, output="points")
        ws.send_bytes(jpeg(65, 47))
        header, (payload,) = frame_answer(ws)
    raw = header["raw"]
    assert header["binary"] == ["uint16le"] and raw["step"] == 2 and (raw["width"], raw["height"]) == (33, 24)
    assert len(payload) == 33 * 24 * 2 and (header["width"], header["height"]) == (65, 47)
    points = raw_depth.decode(payload, raw)
    everything = raw_depth.decode(full, full_header["raw"])
    steps = (raw["max"] - raw["min"]) / 65535 / 2 + (
        full_header["raw"]["max"] - full_header["raw"]["min"]
    ) / 65535 / 2
    assert np.abs(points - everything[::2, ::2]).max() <= steps * (1 + 1e-9)


@pytest.mark.parametrize("value", ["depth", "RAW", "", 16, None, ["raw"]])
def test_an_unknown_output_is_refused_and_the_stream_goes_on(client, value):
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "config", "output": value}))
        reply = ws.receive_json()
        if value is None:  # null is "no change", as for every field
            assert reply["type"] == "config" and reply["output"] == "color"
        else:
            assert reply["type"] == "error" and reply["code"] == "unknown_output"
            assert "color, raw, both, points" in reply["message"]
        ws.send_bytes(jpeg(64, 48))
        header, _ = frame_answer(ws)
        assert header["binary"] == ["jpeg"]


def test_a_broken_pixel_is_sent_as_the_far_end_of_either_kind():
    from depthstream.contract import DepthKind

    depth = np.array([[1.0, 2.0], [np.nan, 3.0]], np.float32)
    relative = raw_depth.decode(*raw_depth.encode(depth))
    metres = raw_depth.decode(*raw_depth.encode(depth, DepthKind.METRIC))
    assert relative[1, 0] == pytest.approx(1.0)  # inverse depth: the smallest is the farthest
    assert metres[1, 0] == pytest.approx(3.0)  # metres: the largest is the farthest


def test_a_flat_or_partly_broken_depth_still_encodes():
    payload, header = raw_depth.encode(np.full((4, 5), 2.5, np.float32))
    assert (header["min"], header["max"]) == (2.5, 2.5) and set(np.frombuffer(payload, "<u2")) == {0}
    broken = np.array([[np.nan, 1.0], [3.0, np.inf]], np.float32)
    payload, header = raw_depth.encode(broken)
    assert (header["min"], header["max"]) == (1.0, 3.0)
    assert list(np.frombuffer(payload, "<u2")) == [0, 0, 65535, 0]
    np.testing.assert_allclose(raw_depth.decode(payload, header), [[1.0, 1.0], [3.0, 1.0]])


def test_raw_only_still_refuses_a_depth_with_no_finite_value(client, fake):
    fake.output = lambda shape: np.full(shape[:3], np.nan, np.float32)
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        configure(ws, output="raw")
        ws.send_bytes(jpeg(64, 48))
        reply = ws.receive_json()
    assert reply["type"] == "error" and reply["code"] == "bad_output"
