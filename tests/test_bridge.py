"""Integration: the bridge on a real uvicorn, talking to a real tritonserver, real photographs."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from websockets.sync.client import connect

from depthstream.render import raw_depth
from tests.helpers import TINY_SERVED
from tests.wire import RECV_TIMEOUT_S, get, jpeg, next_answer, open_stream, recv_json


def test_one_frame_in_one_json_and_one_jpeg_of_the_same_size_out(bridge):
    with open_stream(bridge.ws_url) as ws:
        ws.send(jpeg(640, 480))
        header, image = next_answer(ws)
    assert header["type"] == "depth" and header["seq"] == 0 and header["dropped"] == 0
    assert header["model"] == "depth_anything_v2_small"
    assert (header["width"], header["height"]) == (640, 480)
    assert image.shape == (480, 640, 3)
    assert image.std() > 5, "depth image should have structure, not a flat color"
    assert set(header["timings_ms"]) >= {"decode", "infer", "colorize", "encode", "total"}


def test_latest_frame_wins_and_seq_and_dropped_add_up(bridge):
    frames = 8
    with open_stream(bridge.ws_url) as ws:
        data = jpeg(320, 240)
        for _ in range(frames):
            ws.send(data)
        answered = []
        while not answered or answered[-1]["seq"] != frames - 1:
            header, image = next_answer(ws)
            assert header["type"] == "depth", header
            answered.append(header)
    seqs = [h["seq"] for h in answered]
    assert seqs == sorted(set(seqs)), "answers come in order, each frame at most once"
    for count, header in enumerate(answered, start=1):
        # every frame up to this one was answered or dropped (later ones may be dropped already)
        assert header["dropped"] >= header["seq"] + 1 - count
    assert answered[-1]["dropped"] > 0, "frames sent faster than answered must be dropped"
    assert len(answered) + answered[-1]["dropped"] == frames, "every frame is answered or counted"


def test_model_switch_mid_stream(bridge):
    with open_stream(bridge.ws_url) as ws:
        ws.send(jpeg(320, 240))
        first, _ = next_answer(ws)
        ws.send(json.dumps({"type": "config", "model": "midas_dpt_beit_base_384", "colormap": "turbo"}))
        ack = recv_json(ws)
        assert ack == {
            "type": "config",
            "model": "midas_dpt_beit_base_384",
            "depth": {"kind": "relative", "units": "relative", "larger": "closer"},
            "intrinsics": False,  # it returns no camera
            "colormap": "turbo",
            "output": "color",
            "steady": True,  # the default: relative depth aligned to the stream
            "random_weights": False,
            "received": 1,
            "dropped": 0,
            "controls_refused": 0,
        }
        ws.send(jpeg(320, 240))
        second, image = next_answer(ws)
    assert first["model"] == "depth_anything_v2_small"
    assert second["model"] == "midas_dpt_beit_base_384" and second["seq"] == 1
    assert image.shape == (240, 320, 3)


def test_a_metric_stream_says_metres_everywhere_and_draws_near_bright(bridge):
    """hello/config say what DEPTH means; each header of a metric model carries the colorbar's
    range in metres and the raw depth's units; near (fewer metres) is drawn bright."""
    metric = "depth_anything_v2_metric_indoor_small"
    with connect(bridge.ws_url, max_size=None) as ws:
        hello = recv_json(ws)
        assert hello["depth"] == {"kind": "relative", "units": "relative", "larger": "closer"}
        ws.send(json.dumps({"type": "config", "model": metric, "colormap": "gray", "output": "both"}))
        ack = recv_json(ws)
        assert ack["depth"] == {"kind": "metric", "units": "m", "larger": "farther", "max_m": 20}
        ws.send(jpeg(320, 240))
        header = recv_json(ws)
        while header["type"] != "depth":
            header = recv_json(ws)
        picture = cv2.imdecode(np.frombuffer(ws.recv(timeout=RECV_TIMEOUT_S), np.uint8), cv2.IMREAD_GRAYSCALE)
        payload = ws.recv(timeout=RECV_TIMEOUT_S)
    assert header["depth"] == "metric" and header["raw"]["units"] == "m"
    bar = header["colorbar"]
    assert bar["units"] == "m" and 0 < bar["near"] < bar["far"] < 20
    metres = raw_depth.decode(payload, header["raw"])
    near, far = metres < np.percentile(metres, 10), metres > np.percentile(metres, 90)
    assert picture[near].mean() > picture[far].mean() + 50


def test_two_clients_get_their_own_answers(bridge):
    sizes = {"a": (320, 240, "astronaut"), "b": (200, 300, "coffee")}
    results: dict[str, dict] = {}

    def client(key: str) -> None:
        width, height, name = sizes[key]
        with open_stream(bridge.ws_url) as ws:
            ws.send(jpeg(width, height, name))
            header, image = next_answer(ws)
            results[key] = {"header": header, "shape": image.shape}

    threads = [threading.Thread(target=client, args=(key,)) for key in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RECV_TIMEOUT_S)
    for key, (width, height, _) in sizes.items():
        assert results[key]["header"]["seq"] == 0
        assert results[key]["shape"] == (height, width, 3)


@pytest.mark.parametrize(
    "message,code",
    [
        ('{"type": "config", "model": "nope"}', "unknown_model"),
        ('{"type": "config", "colormap": "rainbow-unicorn"}', "unknown_colormap"),
        ("not json", "bad_json"),
    ],
)
def test_bad_control_message_gets_an_error_and_the_stream_goes_on(bridge, message, code):
    with open_stream(bridge.ws_url) as ws:
        ws.send(message)
        error = recv_json(ws)
        assert error["type"] == "error" and error["code"] == code
        ws.send(jpeg(64, 48))
        header, _ = next_answer(ws)
        assert header["type"] == "depth" and header["seq"] == 0


def test_bad_frame_gets_an_error_with_its_seq_and_the_next_frame_is_answered(bridge):
    with open_stream(bridge.ws_url) as ws:
        ws.send(b"\xff\xd8\xff" + b"garbage" * 10)
        error, _ = next_answer(ws)
        assert error["type"] == "error" and error["code"] == "bad_image" and error["seq"] == 0
        ws.send(jpeg(64, 48))
        header, _ = next_answer(ws)
        assert header["type"] == "depth" and header["seq"] == 1


def test_health_ready_models_and_metrics(bridge):
    assert get(f"{bridge.url}/healthz") == (200, {"status": "ok"})
    assert get(f"{bridge.url}/readyz") == (200, {"status": "ready"})
    status, models = get(f"{bridge.url}/api/models")
    assert status == 200
    served = {m["name"]: (m["ready"], m["random_weights"]) for m in models["models"]}
    assert set(served) == TINY_SERVED, "the tiny repository serves every preset and INT8 twin"
    assert set(served.values()) == {(True, False)}
    with open_stream(bridge.ws_url) as ws:
        ws.send(jpeg(64, 48))
        next_answer(ws)
    status, text = get(f"{bridge.url}/metrics")
    assert status == 200
    received = [line for line in text.splitlines() if line.startswith("depthstream_frames_received_total")]
    assert received and float(received[0].split()[-1]) >= 1
    assert 'depthstream_stage_seconds_count{stage="infer"}' in text


def test_page_is_served(bridge):
    status, html = get(f"{bridge.url}/")
    assert status == 200 and 'id="start"' in html and "main.js" in html
