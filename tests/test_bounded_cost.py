"""What one request may cost: the contract's ceiling inside the graph, the limits Triton itself
enforces, abandoned work never run, and a bystander unharmed by the costliest frames."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException
from websockets.sync.client import connect

from depthstream.contract import (
    DEPTH_ANYTHING_V2_SMALL,
    MAX_BATCH_SIZE,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
)
from serving.triton import EmbeddedTriton
from tests.helpers import photo
from tests.servers import RunningBridge, bridge_settings, slowed_triton
from tests.wire import jpeg, next_answer, png, recv_json

DA = DEPTH_ANYTHING_V2_SMALL


# --- the ceiling, in the exported graph itself ------------------------------------------------
@pytest.fixture(scope="module")
def network_input_probe(tiny_repository, tmp_path_factory) -> ort.InferenceSession:
    """The exported Depth Anything graph with the network's input tensor (what the patch
    embedding convolution sees) exposed as a second output."""
    model = onnx.load(str(tiny_repository / DA.name / "1" / "model.onnx"))
    first_conv = next(node for node in model.graph.node if node.op_type == "Conv")
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(first_conv.input[0], onnx.TensorProto.FLOAT, None)
    )
    path = Path(tmp_path_factory.mktemp("probe")) / "probe.onnx"
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def network_input(session: ort.InferenceSession, height: int, width: int) -> tuple[int, int]:
    image = np.zeros((1, height, width, 3), np.uint8)
    depth, pixels = session.run(None, {"IMAGE": image})
    assert depth.shape == (1, height, width), "the output stays at the input's size"
    return pixels.shape[2], pixels.shape[3]


sides = st.integers(MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(MIN_IMAGE_SIDE, 40), sides),  # thin strips
        st.tuples(sides, st.integers(MIN_IMAGE_SIDE, 40)),  # tall strips
        st.tuples(st.integers(MIN_IMAGE_SIDE, 12), st.integers(MIN_IMAGE_SIDE, 12)),  # tiny
        st.tuples(st.integers(100, 900), st.integers(100, 900)),  # ordinary
    )
)
def test_graph_network_input_never_exceeds_the_ceiling(network_input_probe, shape):
    height, width = shape
    got = network_input(network_input_probe, height, width)
    assert max(got) <= DA.resize.max_side
    assert got == DA.resize.network_size(height, width), "the graph computes the contract's rule"


# --- the limits, enforced by the embedded Triton for direct gRPC clients -------------------------
def triton_metric(triton: EmbeddedTriton, name: str, **labels: str) -> float:
    return triton.metric(name, **labels)


def infer(url: str, model: str, batch: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput("IMAGE", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        return client.infer(model, [tensor]).as_numpy("DEPTH")


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 2, MAX_IMAGE_SIDE + 1, 3), "pixels a side"),
        ((1, MAX_IMAGE_SIDE + 1, 2, 3), "pixels a side"),
        (
            (1, MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE + 1, MAX_IMAGE_SIDE, 3),
            f"limits are {MAX_IMAGE_PIXELS} pixels",
        ),
        ((1, 1, 64, 3), f"must be >= {MIN_IMAGE_SIDE}"),
        ((MAX_BATCH_SIZE + 1, 8, 8, 3), "batch"),
    ],
)
def test_triton_refuses_beyond_the_limits_before_running(triton, shape, message):
    runs_before = triton_metric(triton, "depthstream_model_runs_total", model=DA.name)
    with pytest.raises(InferenceServerException, match=message):
        infer(triton.settings.grpc_url, DA.name, np.zeros(shape, np.uint8))
    assert triton_metric(triton, "depthstream_model_runs_total", model=DA.name) == runs_before
    assert infer(triton.settings.grpc_url, DA.name, photo(64, 48)[None]).shape == (1, 48, 64)


def test_the_largest_accepted_image_is_answered_at_its_size(triton):
    height, width = 3, MAX_IMAGE_SIDE
    assert infer(triton.settings.grpc_url, DA.name, np.zeros((1, height, width, 3), np.uint8)).shape == (
        1,
        height,
        width,
    )


# --- abandoned work is not run ---------------------------------------------------------------
SLOW_MS = 400  # each run of the tiny model takes this long: a slow machine, on purpose


@pytest.fixture(scope="module")
def slow_triton(tiny_repository, tmp_path_factory):
    with slowed_triton(tiny_repository, tmp_path_factory.mktemp("slow"), SLOW_MS, "slow") as server:
        yield server


@pytest.fixture(scope="module")
def slow_bridge(slow_triton):
    with RunningBridge(bridge_settings(slow_triton.settings.grpc_url, max_fps=100)) as running:
        yield running


def runs(triton: EmbeddedTriton) -> float:
    return triton_metric(triton, "depthstream_model_runs_total", model=DA.name)


def test_clients_that_send_and_leave_cost_at_most_one_run_through_the_bridge(slow_bridge, slow_triton):
    frame = jpeg(160, 120)
    with connect(slow_bridge.ws_url, max_size=None) as bystander:
        recv_json(bystander)
        bystander.send(frame)
        next_answer(bystander)  # warm: the bridge now knows the model's time
        before = runs(slow_triton)
        for _ in range(5):
            with connect(slow_bridge.ws_url, max_size=None) as leaver:
                recv_json(leaver)
                leaver.send(frame)
                time.sleep(0.05)
        bystander.send(frame)
        header, _ = next_answer(bystander)
        assert header["type"] == "depth"
        time.sleep(SLOW_MS / 1e3 * 2)  # anything still queued would have run by now
    assert runs(slow_triton) - before <= 2, "the bystander's frame plus at most one abandoned frame"


def test_cancelled_direct_requests_are_not_run(slow_triton):
    async def scenario() -> None:
        image = photo(64, 48)[None]
        async with aioclient.InferenceServerClient(slow_triton.settings.grpc_url) as client:

            def request(**options):
                tensor = aioclient.InferInput("IMAGE", list(image.shape), "UINT8")
                tensor.set_data_from_numpy(image)
                return client.infer(DA.name, [tensor], **options)

            running = asyncio.create_task(request())
            await asyncio.sleep(0.1)
            abandoned = [asyncio.create_task(request(client_timeout=0.2)) for _ in range(5)]
            results = await asyncio.gather(*abandoned, return_exceptions=True)
            assert all(isinstance(r, InferenceServerException) for r in results)
            await running
            await request()  # the bystander

    before = runs(slow_triton)
    skipped_before = triton_metric(slow_triton, "depthstream_requests_skipped_total", reason="cancelled")
    asyncio.run(scenario())
    time.sleep(SLOW_MS / 1e3 * 2)
    assert runs(slow_triton) - before == 2, "only the first request and the bystander's run"
    skipped = triton_metric(slow_triton, "depthstream_requests_skipped_total", reason="cancelled")
    assert skipped - skipped_before == 5


# --- the costliest frames, through the bridge and straight to Triton, and a bystander -----------
def test_costliest_frames_leave_a_bystander_unharmed(slow_bridge, slow_triton):
    strip = png(np.zeros((MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, 3), np.uint8))  # the ceiling, in a few KB
    stop = threading.Event()

    def attack_through_bridge() -> None:
        with connect(slow_bridge.ws_url, max_size=None) as ws:
            recv_json(ws)
            while not stop.is_set():
                ws.send(strip)
                time.sleep(0.02)

    def attack_triton_directly() -> None:
        image = np.zeros((MAX_BATCH_SIZE, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, 3), np.uint8)
        while not stop.is_set():
            infer(slow_triton.settings.grpc_url, DA.name, image)

    attackers = [threading.Thread(target=f) for f in (attack_through_bridge, attack_triton_directly)]
    for thread in attackers:
        thread.start()
    answered, errors, sent = 0, [], 0
    try:
        with connect(slow_bridge.ws_url, max_size=None) as ws:
            recv_json(ws)
            start = time.monotonic()
            while time.monotonic() - start < 6:
                ws.send(jpeg(320, 240))
                sent += 1
                message = json.loads(ws.recv(timeout=20))
                if message["type"] == "depth":
                    ws.recv(timeout=20)  # its JPEG
                    answered += 1
                else:
                    errors.append(message)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(30)
    # Each answer waited behind at most one strip of the bridge's attacker (the bridge admits
    # one request at a time, in turn) and one batch of the direct one (Triton's queue): slow on
    # this deliberately slow server, but every frame answered within its deadline, none lost.
    assert errors == [], errors
    assert answered == sent >= 1
