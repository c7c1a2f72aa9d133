"""Fast, in-process: the real app and session through Starlette's TestClient, the real gateway,
and a stand-in for tritonclient's aio client (tests/fake_triton.py). Every branch: each error
code, the connection limit, draining, model mismatch, busy, timeout, expired frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from starlette import status

from bridge.catalog import MODEL_LIST_TTL_S
from bridge.protocol import ErrorCode
from depthstream.contract import DEFAULT_MODEL, MAX_IMAGE_SIDE, MODELS
from tests.app_client import answer, closed_with, hello, jpeg, make_client
from tests.fake_triton import FakeTriton, triton_error
from tests.helpers import png_header
from tests.wire import wait_until


@pytest.fixture
def fake() -> FakeTriton:
    return FakeTriton()


@pytest.fixture
def client(fake):
    with make_client(fake) as client:
        yield client


def test_a_frame_is_answered_with_depth_at_its_size(client):
    with client.websocket_connect("/ws") as ws:
        greeting = hello(ws)
        assert greeting["model"] == DEFAULT_MODEL
        assert set(greeting["error_codes"]["transient"]) >= {"busy", "timeout", "triton_unavailable"}
        ws.send_bytes(jpeg(64, 48))
        header, image = answer(ws)
    assert (
        header["type"] == "depth" and header["seq"] == 0 and (header["width"], header["height"]) == (64, 48)
    )
    assert cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


@pytest.mark.parametrize(
    "status,text,code",
    [
        ("RESOURCE_EXHAUSTED", "", ErrorCode.BUSY),
        ("UNAVAILABLE", "Exceeds maximum queue size", ErrorCode.BUSY),  # Triton's bounded queue
        ("UNAVAILABLE", "Request timeout expired", ErrorCode.BUSY),
        ("UNAVAILABLE", "failed to connect to all addresses", ErrorCode.TRITON_UNAVAILABLE),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", ErrorCode.TIMEOUT),
        ("CANCELLED", "", ErrorCode.TIMEOUT),
        ("NOT_FOUND", "unknown model", ErrorCode.MODEL_NOT_READY),
        ("INTERNAL", "secret stack trace", ErrorCode.INFERENCE_FAILED),
        ("INVALID_ARGUMENT", "secret detail", ErrorCode.INFERENCE_FAILED),
    ],
)
def test_each_triton_failure_has_its_code_and_no_triton_text(client, fake, status, text, code):
    fake.failure = triton_error(status, text)
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg())
        error, _ = answer(ws)
        assert error == {**error, "type": "error", "code": str(code), "seq": 0}
        assert "secret" not in error["message"] and "StatusCode" not in error["message"]
        fake.failure = None
        if code == ErrorCode.TRITON_UNAVAILABLE:  # the gateway's probe finds Triton back
            gateway = client.app.state.depthstream.pool.gateways[0]
            assert wait_until(lambda: gateway.available, 5, 0.01)
        ws.send_bytes(jpeg())
        header, _ = answer(ws)
    assert header["type"] == "depth" and header["seq"] == 1, "the stream goes on after the error"


@pytest.mark.parametrize(
    "output",
    [
        lambda shape: np.zeros((1, 3, 3), np.float32),  # wrong shape
        lambda shape: np.full(shape[:3], np.nan, np.float32),  # no finite depth
        lambda shape: None,  # no output at all
    ],
)
def test_bad_output_is_an_error_for_that_frame(client, fake, output):
    fake.output = output
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg())
        error, _ = answer(ws)
    assert error["code"] == ErrorCode.BAD_OUTPUT and error["seq"] == 0


def test_a_model_that_breaks_the_contract_is_refused_as_mismatch(client, fake):
    fake.mismatched.add("midas_dpt_beit_base_384")
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "config", "model": "midas_dpt_beit_base_384"}))
        error = ws.receive_json()
        assert error["code"] == ErrorCode.MODEL_MISMATCH
        ws.send_text(json.dumps({"type": "config"}))
        assert ws.receive_json()["model"] == DEFAULT_MODEL, "the stream keeps its model"


def test_a_mismatched_default_model_is_said_at_once(fake):
    """A configured default is used as it is, and its problem said at once."""
    fake.mismatched.add(DEFAULT_MODEL)
    with make_client(fake, default_model=DEFAULT_MODEL) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        assert ws.receive_json()["code"] == ErrorCode.MODEL_MISMATCH
        status = client.get("/readyz")
    assert status.status_code == 503


def test_a_model_not_ready_is_refused_as_not_ready(client, fake):
    fake.not_ready.add("midas_dpt_beit_base_384")
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "config", "model": "midas_dpt_beit_base_384"}))
        assert ws.receive_json()["code"] == ErrorCode.MODEL_NOT_READY


def test_triton_down_means_unavailable_at_once_and_not_ready(client, fake):
    fake.up = False
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        assert ws.receive_json()["code"] == ErrorCode.TRITON_UNAVAILABLE
        ws.send_bytes(jpeg())
        error, _ = answer(ws)
        assert error["code"] == ErrorCode.TRITON_UNAVAILABLE
    response = client.get("/readyz")
    assert response.status_code == 503 and "unreachable" in response.json()["reason"]


def test_the_connection_limit_refuses_with_busy_and_1013(fake):
    with make_client(fake, max_connections=1) as client, client.websocket_connect("/ws") as first:
        hello(first)
        with client.websocket_connect("/ws") as second:
            error = second.receive_json()
            assert error["code"] == ErrorCode.BUSY and "limit of 1" in error["message"]
            assert closed_with(second) == status.WS_1013_TRY_AGAIN_LATER
        first.send_bytes(jpeg())
        assert answer(first)[0]["type"] == "depth", "the first stream is untouched"


def test_draining_closes_streams_1001_and_refuses_new_ones(client, fake):
    app = client.app
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        client.portal.call(app.state.depthstream.drain)
        assert closed_with(ws) == status.WS_1001_GOING_AWAY
    with client.websocket_connect("/ws") as late:
        error = late.receive_json()
        assert error["code"] == ErrorCode.SHUTTING_DOWN and closed_with(late) == status.WS_1001_GOING_AWAY
    assert client.get("/readyz").status_code == 503


def test_draining_sends_the_frame_in_flight_before_closing(client, fake):
    fake.delay_s = 0.2  # the frame is at the model when the drain begins
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg())
        assert wait_until(lambda: fake.in_flight == 1, 5, 0.005)
        client.portal.call(client.app.state.depthstream.drain)
        header, image = answer(ws)
        assert header["type"] == "depth" and header["seq"] == 0 and image, "answered, not lost in the close"
        assert closed_with(ws) == status.WS_1001_GOING_AWAY


def test_a_frame_sent_while_draining_is_dropped_and_told_before_the_close(client, fake):
    fake.delay_s = 0.4  # the first frame is at the model while the drain begins
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg())
        assert wait_until(lambda: fake.in_flight == 1, 5, 0.005)
        drained = client.portal.start_task_soon(client.app.state.depthstream.drain)
        assert wait_until(lambda: client.app.state.depthstream.draining, 5, 0.005)
        ws.send_bytes(jpeg())  # arrives during the drain: never inferred
        texts = []
        while (message := ws.receive())["type"] != "websocket.close":
            texts += [json.loads(message["text"])] if "text" in message else []
        assert message["code"] == status.WS_1001_GOING_AWAY
        drained.result(timeout=5)
    answers = [m["seq"] for m in texts if m["type"] == "depth"]
    notices = [(m["seqs"], m["reasons"]) for m in texts if m["type"] == "dropped"]
    assert answers == [0] and notices == [([[1, 1]], {"shutting_down": 1})], texts
    assert fake.calls["infer"] == 1


def test_answers_leave_in_frame_order_while_drawing_overlaps_the_next_inference(client):
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg(1920, 1080))  # slow to draw
        ws.send_bytes(jpeg(64, 48))  # inferred while the first is drawn, and quick to draw
        first, _ = answer(ws)
        second, _ = answer(ws)
    assert (first["seq"], first["width"]) == (0, 1920) and (second["seq"], second["width"]) == (1, 64)


def test_frames_that_cannot_finish_in_time_are_not_sent(fake):
    """Two streams, one request in flight at a time: the second stream's frame would wait for
    the first (0.6 s) and then need 0.6 s itself, past its 1 s deadline: it is dropped unsent."""
    fake.delay_s = 0.6
    with make_client(fake, request_timeout_s=1.0) as client:
        with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
            hello(a), hello(b)
            a.send_bytes(jpeg())
            assert answer(a)[0]["type"] == "depth"  # the bridge now knows the model's time
            calls = fake.calls["infer"]
            a.send_bytes(jpeg())
            assert wait_until(lambda: fake.calls["infer"] == calls + 1, 5, 0.005)  # a's frame at the model
            b.send_bytes(jpeg())
            assert answer(a)[0]["type"] == "depth"
            notice = b.receive_json()  # b is told, so it never waits for an answer to it
            assert notice == {"type": "dropped", "seqs": [[0, 0]], "reasons": {"expired": 1}, "dropped": 1}
            b.send_text(json.dumps({"type": "config"}))
            accounts = b.receive_json()
        assert (accounts["received"], accounts["dropped"]) == (1, 1)
        assert fake.calls["infer"] == calls + 1, "the expired frame never reached Triton"
        assert "depthstream_frames_expired_total 1.0" in client.get("/metrics").text


def test_requests_in_flight_to_triton_are_bounded_by_the_models_instances(fake):
    fake.delay_s = 0.2
    with make_client(fake) as client:
        sockets = [client.websocket_connect("/ws") for _ in range(4)]
        streams = [s.__enter__() for s in sockets]
        try:
            for ws in streams:
                hello(ws)
                ws.send_bytes(jpeg())
            headers = [answer(ws)[0] for ws in streams]
        finally:
            for s in sockets:
                s.__exit__(None, None, None)
    assert all(h["type"] == "depth" for h in headers), "every stream served in turn"
    assert fake.most_in_flight == 1, "one instance: one request in flight, the others wait in the bridge"


def test_rate_limit_drops_and_counts(fake):
    with make_client(fake, max_fps=1) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        for _ in range(4):
            ws.send_bytes(jpeg())
        ws.send_text(json.dumps({"type": "config"}))  # the accounts: after every frame's fate
        # the first frame's answer (its header, then its JPEG) may come before or after the
        # refusal: read the texts, skip the binaries, up to the accounts
        codes, accounts = [], None
        while accounts is None:
            message = ws.receive()
            body = json.loads(message["text"]) if "text" in message else {"type": "binary"}
            if body["type"] == "error":
                codes.append(body["code"])
            elif body["type"] == "config":
                accounts = body
        assert ErrorCode.RATE_LIMITED in codes
        assert accounts["received"] == 4 and accounts["dropped"] >= 3  # one second's burst: 1 frame


@pytest.mark.parametrize(
    "data,code",
    [
        (b"not an image", ErrorCode.UNSUPPORTED_FORMAT),
        (png_header(MAX_IMAGE_SIDE + 1, 2), ErrorCode.IMAGE_TOO_LARGE),
        (png_header(1, 1), ErrorCode.IMAGE_TOO_SMALL),
        (jpeg()[:-50], ErrorCode.BAD_IMAGE),
    ],
)
def test_bad_frames_get_their_code_and_never_reach_triton(client, fake, data, code):
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(data)
        error, _ = answer(ws)
    assert error["code"] == code and "infer" not in fake.calls


@pytest.mark.parametrize(
    "text,code",
    [
        ("{", ErrorCode.BAD_JSON),
        ('{"type": "hello"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "config", "fps": 3}', ErrorCode.UNKNOWN_FIELD),
        ('{"type": "config", "model": "resnet"}', ErrorCode.UNKNOWN_MODEL),
        ('{"type": "config", "colormap": "jet3"}', ErrorCode.UNKNOWN_COLORMAP),
    ],
)
def test_bad_control_messages_get_their_code(client, text, code):
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_text(text)
        assert ws.receive_json()["code"] == code


def test_a_foreign_origin_is_refused_1008(client):
    with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws:
        assert ws.receive_json()["code"] == ErrorCode.FORBIDDEN_ORIGIN
        assert closed_with(ws) == status.WS_1008_POLICY_VIOLATION


def test_the_token_guards_the_stream_and_the_api(fake):
    token = "t" * 20
    with make_client(fake, token=token) as client:
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json()["code"] == ErrorCode.UNAUTHORIZED
            assert closed_with(ws) == status.WS_1008_POLICY_VIOLATION
        assert client.get("/api/models").status_code == 401
        assert client.get("/api/models", headers={"authorization": f"Bearer {token}"}).status_code == 200
        with client.websocket_connect(f"/ws?token={token}") as ws:
            hello(ws)


def test_api_models_is_cached_and_honours_the_default_colormap(fake):
    with make_client(fake, default_colormap="turbo") as client:
        first = client.get("/api/models").json()
        calls = dict(fake.calls)
        second = client.get("/api/models").json()
    assert first == second and first["default_colormap"] == "turbo"
    model_rpcs = ("is_model_ready", "get_model_metadata", "get_model_config")
    assert [fake.calls[r] for r in model_rpcs] == [calls[r] for r in model_rpcs], (
        f"served from the cache (refreshed every {MODEL_LIST_TTL_S:g} s), not 3 RPCs per model"
    )
    assert {m["name"] for m in first["models"]} >= {"depth_anything_v2_small", "midas_dpt_beit_base_384"}


def test_a_client_gone_mid_frame_leaves_the_bridge_serving(client, fake):
    fake.delay_s = 0.3
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg())
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg())
        assert answer(ws)[0]["type"] == "depth"
    assert "depthstream_connections 0.0" in client.get("/metrics").text


def test_random_weights_are_reported(fake):
    fake.random_weights = True
    with make_client(fake) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg())
        header, _ = answer(ws)
    assert header["random_weights"] is True


def test_once_triton_is_known_down_frames_fail_fast_without_a_call(client, fake):
    fake.failure = triton_error("UNAVAILABLE", "failed to connect to all addresses")
    fake.up = False  # the probe finds it down too
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.receive_json()  # the start-up check already says unavailable
        ws.send_bytes(jpeg())
        assert answer(ws)[0]["code"] == ErrorCode.TRITON_UNAVAILABLE
        calls = fake.calls.get("infer", 0)
        ws.send_bytes(jpeg())
        assert answer(ws)[0]["code"] == ErrorCode.TRITON_UNAVAILABLE
    assert fake.calls.get("infer", 0) == calls, "no request to a Triton known to be down"


def test_latest_frame_wins_and_every_frame_is_accounted_for(client, fake):
    fake.delay_s = 0.2
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        for _ in range(6):
            ws.send_bytes(jpeg())
        answered = [answer(ws)[0] for _ in range(2)]
        ws.send_text(json.dumps({"type": "config"}))
        accounts = ws.receive_json()
    assert [h["seq"] for h in answered] == [0, 5], "the first, then the newest; the rest replaced"
    assert accounts["received"] == 6 and accounts["dropped"] == 4


def test_the_bridges_own_pixel_limit_applies_below_the_contracts(fake):
    with make_client(fake, max_pixels=1000) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_bytes(jpeg(64, 48))
        error, _ = answer(ws)
    assert error["code"] == ErrorCode.IMAGE_TOO_LARGE and "limit is 1000" in error["message"]


def test_the_in_flight_bound_grows_with_the_servers_behind_a_dns_name(fake):
    """A headless Service resolves to one address per Triton pod: each can take its share."""
    import asyncio
    import socket
    from unittest import mock

    from bridge.triton import TritonGateway

    async def scenario() -> int:
        gateway = TritonGateway("dns:///triton:8001", 10.0, client=fake)
        addresses = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"10.0.0.{i}", 8001)) for i in range(3)]
        with mock.patch.object(
            asyncio.get_running_loop(), "getaddrinfo", mock.AsyncMock(return_value=addresses)
        ):
            await gateway.model_info(DEFAULT_MODEL)
        return gateway.limit.capacity

    assert asyncio.run(scenario()) == 3, "one instance per pod, three pods"


def test_reading_models_does_not_change_admission(fake):
    """The in-flight bound is the smallest served model's, whatever order models are read in."""
    import asyncio

    from bridge.triton import TritonGateway

    other = next(name for name in MODELS if name != DEFAULT_MODEL)
    fake.instances = {DEFAULT_MODEL: 1, other: 3}

    async def capacity_after(order: list[str]) -> int:
        gateway = TritonGateway("triton:8001", 10.0, client=fake)
        for name in order:
            await gateway.model_info(name)
        return gateway.limit.capacity

    assert asyncio.run(capacity_after([DEFAULT_MODEL, other])) == 1
    assert asyncio.run(capacity_after([other, DEFAULT_MODEL, other])) == 1, "the last read does not win"


def test_a_burst_of_handshakes_cannot_pass_the_connection_limit(fake):
    import threading

    results: list[str] = []
    every_one_tried = threading.Event()
    with make_client(fake, max_connections=2) as client:

        def connect() -> None:
            with client.websocket_connect("/ws") as ws:
                results.append(ws.receive_json()["type"])
                if len(results) == 5:
                    every_one_tried.set()
                every_one_tried.wait(10)  # those let in hold their places until all have tried

        threads = [threading.Thread(target=connect) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert results.count("hello") == 2 and results.count("error") == 3


@pytest.mark.parametrize("admin_key", ["", "k" * 32])
def test_hello_says_which_models_are_served_and_an_optional_one_missing_is_no_warning(
    fake, caplog, admin_key
):
    import logging

    twin = "depth_anything_v2_small_252_int8"
    fake.not_ready = {twin}
    with (
        caplog.at_level(logging.INFO, logger="bridge.app"),
        make_client(fake, triton_admin_key=admin_key) as client,
        client.websocket_connect("/ws") as ws,
    ):
        greeting = hello(ws)
    assert twin in greeting["models"] and twin not in greeting["ready"]
    assert set(greeting["ready"]) == set(MODELS) - {twin}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any(twin in message for message in warnings), warnings
    # the repository's index (behind the admin key) lists a model that did not load; Triton's
    # statistics, read without the key, list only the loaded ones
    said = any(twin in r.getMessage() and "not served here" in r.getMessage() for r in caplog.records)
    assert said == bool(admin_key)
    assert fake.calls.get("get_model_repository_index", 0) == (1 if admin_key else 0)


def test_the_page_is_compressed_and_revalidated_not_refetched(client):
    plain = client.get("/vendor/three/three.core.js", headers={"Accept-Encoding": "identity"})
    gzipped = client.get("/vendor/three/three.core.js", headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["content-encoding"] == "gzip" and gzipped.content == plain.content
    assert gzipped.num_bytes_downloaded < len(plain.content) / 3  # the bytes on the wire
    page = client.get("/")
    assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
    again = client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == status.HTTP_304_NOT_MODIFIED and again.content == b""


def added_spec(name: str = "my_dpt"):
    from dataclasses import replace

    from depthstream.contract import DepthKind, spec_of

    base = spec_of("midas_dpt_beit_base_384")
    return replace(
        base,
        name=name,
        title="me/my-dpt",
        checkpoint=name,
        hub_id="me/my-dpt",
        added=True,
        depth=DepthKind.METRIC,
        max_depth_m=10,
    )


def test_an_added_model_is_listed_from_its_served_config_and_streams(fake):
    fake.served["my_dpt"] = added_spec()
    with make_client(fake) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert models["my_dpt"]["added"] and models["my_dpt"]["ready"]
        assert models["my_dpt"]["depth"]["units"] == "m" and models["my_dpt"]["title"] == "me/my-dpt"
        assert not models["depth_anything_v2_small"]["added"]
        with client.websocket_connect("/ws") as ws:
            hello(ws)
            ws.send_json({"type": "config", "model": "my_dpt", "output": "raw"})
            assert ws.receive_json()["type"] == "config"
            ws.send_bytes(jpeg())
            header, _ = answer(ws)
            assert header["model"] == "my_dpt" and header["depth"] == "metric"


def test_a_default_model_triton_does_not_serve_is_said_after_hello_not_a_crash(fake):
    with make_client(fake, default_model="not_served_yet") as client, client.websocket_connect("/ws") as ws:
        greeting = hello(ws)
        assert greeting["model"] == "not_served_yet" and greeting["depth"] is None
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "model_not_ready"


def test_with_the_admin_key_a_model_that_failed_to_load_is_listed_with_the_reason(fake):
    fake.failed["broken_one"] = "failed to load: onnx file is corrupt"
    fake.failed["put_away"] = "unloaded"  # unloaded on purpose by the admin: not a failure
    for key, listed in (("", False), ("k" * 32, True)):
        with make_client(fake, triton_admin_key=key) as client:
            models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert ("broken_one" in models) == listed and "put_away" not in models
        if listed:
            assert (
                not models["broken_one"]["ready"]
                and "onnx file is corrupt" in models["broken_one"]["problem"]
            )


# --- the camera a model estimates (INTRINSICS) -------------------------------------------------
CAMERA_MODEL = "depth_anything_3_small_252"


def test_a_camera_model_is_listed_with_intrinsics_and_its_frames_carry_the_camera(fake):
    """/api/models and hello say intrinsics; each depth header carries fx, fy, cx, cy in the
    frame's pixels and the field of view; a model without the output carries none."""
    with make_client(fake) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert models[CAMERA_MODEL]["intrinsics"] and models[CAMERA_MODEL]["outputs"] == [
            "DEPTH",
            "INTRINSICS",
        ]
        assert models[CAMERA_MODEL]["depth"] == {"kind": "scaled", "units": "scale", "larger": "farther"}
        assert not models["depth_anything_v2_small"]["intrinsics"]
        with client.websocket_connect("/ws") as ws:
            assert hello(ws)["intrinsics"] is False  # the default model has none
            ws.send_bytes(jpeg())
            header, _ = answer(ws)
            assert header["camera"] is None
            ws.send_json({"type": "config", "model": CAMERA_MODEL, "steady": False})
            assert ws.receive_json()["intrinsics"] is True
            ws.send_bytes(jpeg())
            header, _ = answer(ws)
    camera = header["camera"]
    width, height = header["width"], header["height"]
    assert camera["hfov_deg"] == pytest.approx(65.0, abs=0.01) and not camera["smoothed"]
    assert (camera["cx"], camera["cy"]) == (width / 2, height / 2) and camera["fx"] == camera["fy"]


def test_with_steady_on_the_camera_is_smoothed_and_with_it_off_each_frames_own(fake):
    """Each frame's estimate weighs 0.2 with steady on; steady off answers each frame's own."""
    estimates = iter([60.0, 70.0, 70.0, 80.0])
    from tests.fake_triton import default_intrinsics

    fake.intrinsics_of = lambda shape: default_intrinsics(shape, next(estimates))
    with make_client(fake) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_json({"type": "config", "model": CAMERA_MODEL, "steady": True})
        ws.receive_json()
        fields = []
        for _ in range(3):
            ws.send_bytes(jpeg())
            header, _ = answer(ws)
            fields.append(header["camera"])
        ws.send_json({"type": "config", "steady": False})
        ws.receive_json()
        ws.send_bytes(jpeg())
        last, _ = answer(ws)
    width = last["width"]
    focal = [width / (2 * np.tan(np.radians(deg) / 2)) for deg in (60.0, 70.0, 70.0)]
    smoothed = focal[0]
    for frame, seen in zip(focal, fields, strict=True):
        smoothed = frame if seen is fields[0] else 0.8 * smoothed + 0.2 * frame
        assert seen["fx"] == pytest.approx(smoothed, abs=2e-3) and seen["smoothed"]
    assert last["camera"]["hfov_deg"] == pytest.approx(80.0, abs=0.01) and not last["camera"]["smoothed"]


def test_a_camera_that_is_not_finite_is_not_sent(fake):
    fake.intrinsics_of = lambda shape: np.full((shape[0], 3, 3), np.nan, np.float32)
    with make_client(fake) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_json({"type": "config", "model": CAMERA_MODEL})
        ws.receive_json()
        ws.send_bytes(jpeg())
        header, _ = answer(ws)
    assert header["camera"] is None and header["model"] == CAMERA_MODEL


def test_a_model_slower_than_the_deadline_is_not_offered_and_says_why(fake):
    """Depth Pro's 1536x1536 input takes minutes a frame on a CPU: beyond request_timeout_s every
    frame would time out, so the bridge lists it as not ready, with its time and the setting."""
    fake.ms_per_frame["depth_anything_v2_small_252"] = 174_100.0
    with make_client(fake, request_timeout_s=10.0) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        slow = models["depth_anything_v2_small_252"]
        assert not slow["ready"] and "slower than this bridge's deadline: 174.1 s" in slow["problem"]
        assert "BRIDGE_REQUEST_TIMEOUT_S" in slow["problem"]
        with client.websocket_connect("/ws") as ws:
            hello(ws)
            ws.send_json({"type": "config", "model": "depth_anything_v2_small_252"})
            error = ws.receive_json()
            assert error["type"] == "error" and error["code"] == "model_not_ready"
            assert "slower than this bridge's deadline" in error["message"]
    with make_client(fake, request_timeout_s=200.0) as client:  # a deadline that fits it
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert models["depth_anything_v2_small_252"]["ready"]


def test_a_camera_model_whose_served_outputs_lack_intrinsics_is_refused_with_the_reason(fake):
    """Its spec says it estimates the camera, Triton's metadata has no INTRINSICS: refused at
    listing, not a bad_output on every frame."""
    fake.without_intrinsics.add(CAMERA_MODEL)
    with make_client(fake) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert not models[CAMERA_MODEL]["ready"]
    assert "its spec says intrinsics=True, its outputs are ['DEPTH']" in models[CAMERA_MODEL]["problem"]


def test_the_metrics_count_what_the_stream_accounts_for(client, fake):
    """The bridge's counters and a stream's own accounts are the same books: every frame
    received, dropped and answered is counted in both."""
    fake.delay_s = 0.2  # frames arrive while one is at the model: some are replaced
    with client.websocket_connect("/ws") as ws:
        hello(ws)
        for _ in range(5):
            ws.send_bytes(jpeg())
        answered, dropped = 0, set()
        while answered + len(dropped) < 5:
            message = ws.receive_json()
            if message["type"] == "depth":
                answered += 1
                ws.receive_bytes()
            elif message["type"] == "dropped":
                dropped.update(seq for first, last in message["seqs"] for seq in range(first, last + 1))
        ws.send_text(json.dumps({"type": "config"}))
        accounts = ws.receive_json()
    text = client.get("/metrics").text

    def metric(name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    assert accounts["received"] == 5 == metric("depthstream_frames_received_total")
    assert accounts["dropped"] == len(dropped) == metric("depthstream_frames_dropped_total") >= 1
    assert answered == metric("depthstream_frames_answered_total") == 5 - len(dropped)


def test_a_model_gone_from_one_endpoint_moves_the_stream_to_another(fake):
    """A model unloaded (or being reloaded) on one Triton: the stream hears it once and moves to
    the other, which serves it (found by make chaos: without the move, every frame failed for
    as long as the reload took)."""
    from starlette.testclient import TestClient

    from bridge.app import create_app
    from bridge.settings import BridgeSettings

    other = FakeTriton()
    fakes = {"fake-a:8001": fake, "fake-b:8001": other}
    app = create_app(BridgeSettings(triton_url=",".join(fakes)), client_factory=lambda url: fakes[url])
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        (session,) = app.state.depthstream.sessions
        assert session.gateway.url == "fake-a:8001", "a new stream goes to the first of two idle endpoints"
        fake.failure = triton_error("NOT_FOUND", "unknown model")
        ws.send_bytes(jpeg())
        error, _ = answer(ws)
        assert error["code"] == ErrorCode.MODEL_NOT_READY and "moved to another" in error["message"]
        ws.send_bytes(jpeg())
        header, _ = answer(ws)
    assert header["type"] == "depth" and other.calls["infer"] == 1 and fake.calls["infer"] == 1


def test_a_refused_config_says_it_replies_to_the_config_and_a_start_up_error_does_not(fake):
    with make_client(fake) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "config", "colormap": "no-such-map"}))
        refusal = ws.receive_json()
        assert refusal["type"] == "error" and refusal["reply_to"] == "config", refusal
        ws.send_bytes(b"not an image")
        frame_error, _ = answer(ws)
        assert frame_error["seq"] == 0 and "reply_to" not in frame_error
