"""Faults: Triton down, killed, hung; clients that vanish, never read; SIGTERM; NaN output."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from starlette import status
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from depthstream.contract import DEPTH_ANYTHING_V2_SMALL
from serving.supervisor import TritonSupervisor
from serving.triton import EmbeddedTriton
from tests.helpers import free_port
from tests.servers import ARTIFACTS, RunningBridge, bridge_settings, triton_settings
from tests.wire import bridge_up, get, jpeg, metric, next_answer, open_stream, recv_json, wait_until

GOOD = jpeg(64, 48)
ONE_MODEL = (DEPTH_ANYTHING_V2_SMALL.name,)


@pytest.fixture
def own_triton(tiny_repository, tmp_path):
    """A tritonserver of this test's own, which the test may kill, stop and restart."""
    settings = triton_settings(tiny_repository, tmp_path, models=ONE_MODEL)
    server = EmbeddedTriton(settings, log_path=ARTIFACTS / "tritonserver-faults.log").start()
    yield server
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.mark.integration  # a real uvicorn
def test_triton_down_at_startup(tmp_path):
    settings = bridge_settings(f"127.0.0.1:{free_port()}", request_timeout_s=1.0)
    with RunningBridge(settings) as bridge:
        assert get(f"{bridge.url}/healthz")[0] == 200
        status, body = get(f"{bridge.url}/readyz")
        assert status == 503 and "unreachable" in body["reason"]
        with connect(bridge.ws_url) as ws:
            assert recv_json(ws)["type"] == "hello"
            assert recv_json(ws)["code"] == "triton_unavailable"
            ws.send(GOOD)
            header, _ = next_answer(ws)
            assert header["code"] == "triton_unavailable" and header["seq"] == 0


def test_triton_killed_mid_stream_then_back(own_triton):
    settings = bridge_settings(own_triton.settings.grpc_url, request_timeout_s=3.0)
    with RunningBridge(settings) as bridge, open_stream(bridge.ws_url) as ws:
        ws.send(GOOD)
        assert next_answer(ws)[0]["type"] == "depth"

        os.killpg(own_triton.process.pid, signal.SIGKILL)
        own_triton.process.wait()
        ws.send(GOOD)
        header, _ = next_answer(ws)
        assert header["type"] == "error" and header["code"] == "triton_unavailable"
        assert "unavailable" in header["message"] and "StatusCode" not in header["message"]
        assert get(f"{bridge.url}/healthz")[0] == 200
        assert get(f"{bridge.url}/readyz")[0] == 503

        restarted = EmbeddedTriton(
            own_triton.settings, log_path=ARTIFACTS / "tritonserver-faults.log"
        ).start()
        try:

            def answered() -> bool:
                ws.send(GOOD)
                return next_answer(ws)[0]["type"] == "depth"

            assert wait_until(answered, timeout_s=30, interval_s=0.5), "the bridge resumes by itself"
            assert get(f"{bridge.url}/readyz")[0] == 200
            assert bridge.thread.is_alive()
        finally:
            restarted.stop()


def test_hung_triton_hits_the_deadline_and_the_next_frame_goes_through(own_triton):
    settings = bridge_settings(own_triton.settings.grpc_url, request_timeout_s=1.0)
    with RunningBridge(settings) as bridge, open_stream(bridge.ws_url) as ws:
        ws.send(GOOD)
        assert next_answer(ws)[0]["type"] == "depth"  # the stream is set up before Triton hangs
        os.killpg(own_triton.process.pid, signal.SIGSTOP)
        try:
            ws.send(GOOD)
            header, _ = next_answer(ws)
            assert header["type"] == "error" and header["code"] == "timeout"
        finally:
            os.killpg(own_triton.process.pid, signal.SIGCONT)
        ws.send(GOOD)
        assert next_answer(ws)[0]["type"] == "depth"


def test_client_gone_mid_inference_leaves_nothing_behind(bridge):
    for _ in range(3):
        with connect(bridge.ws_url) as ws:
            recv_json(ws)
            ws.send(jpeg(640, 480))
    assert wait_until(lambda: metric(bridge.url, "depthstream_connections") == 0, timeout_s=10)
    with open_stream(bridge.ws_url) as ws:
        ws.send(GOOD)
        assert next_answer(ws)[0]["type"] == "depth"


def test_client_that_never_reads_is_cut_off_and_others_are_served(triton):
    settings = bridge_settings(triton.settings.grpc_url, send_timeout_s=1.0)
    big = jpeg(1280, 720)
    with RunningBridge(settings) as bridge:
        with connect(bridge.ws_url, max_queue=1) as lazy:  # stops reading after one message
            deadline = time.monotonic() + 60
            while metric(bridge.url, "depthstream_slow_clients_total") < 1 and time.monotonic() < deadline:
                try:
                    lazy.send(big)
                except ConnectionClosed:
                    break
                time.sleep(0.05)
        assert metric(bridge.url, "depthstream_slow_clients_total") >= 1
        with open_stream(bridge.ws_url) as ws:
            ws.send(GOOD)
            assert next_answer(ws)[0]["type"] == "depth"
        assert wait_until(lambda: metric(bridge.url, "depthstream_connections") == 0, timeout_s=10)


def test_sigterm_finishes_in_flight_frames_and_closes_1001(triton):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "--port",
            str(port),
            "--triton-url",
            triton.settings.grpc_url,
            "--log-level",
            "warning",
        ]
    )
    try:
        assert wait_until(lambda: bridge_up(port), timeout_s=30)
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            recv_json(ws)
            ws.send(jpeg(640, 480))
            time.sleep(0.01)  # the frame is being decoded or inferred
            process.send_signal(signal.SIGTERM)
            header, image = next_answer(ws)
            assert header["type"] == "depth" and header["seq"] == 0 and image.shape == (480, 640, 3)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == status.WS_1001_GOING_AWAY
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture
def nan_repository(tiny_repository, tiny_checkpoints, tmp_path):
    """The tiny Depth Anything with a NaN in its head: the export would refuse it (parity), so
    the ONNX is written directly, to see what the bridge does with NaN from a real model server."""
    from transformers import AutoModelForDepthEstimation

    from export.graph import FusedDepthModel, make_exportable
    from export.onnx_export import export
    from tests.helpers import photo

    repository = tmp_path / "repo"
    shutil.copytree(tiny_repository / DEPTH_ANYTHING_V2_SMALL.name, repository / DEPTH_ANYTHING_V2_SMALL.name)
    network = AutoModelForDepthEstimation.from_pretrained(
        tiny_checkpoints[DEPTH_ANYTHING_V2_SMALL.name]
    ).eval()
    with torch.no_grad():
        network.head.conv3.bias.fill_(float("nan"))
    fused = FusedDepthModel(make_exportable(network), DEPTH_ANYTHING_V2_SMALL).eval()
    export(fused, repository / DEPTH_ANYTHING_V2_SMALL.name / "1" / "model.onnx", photo(64, 48))
    return repository


@pytest.mark.integration  # starts its own tritonserver
def test_nan_output_is_an_error_for_that_frame(nan_repository, tmp_path):
    # on ONNX Runtime, which propagates the NaN: OpenVINO's kernels turned this model's output
    # into zeros (measured: a flat map, no NaN), which is a model the bridge cannot tell broken
    settings = triton_settings(nan_repository, tmp_path / "triton", models=ONE_MODEL, engine="onnxruntime")
    with (
        EmbeddedTriton(settings, log_path=ARTIFACTS / "tritonserver-nan.log"),
        RunningBridge(bridge_settings(settings.grpc_url)) as bridge,
        open_stream(bridge.ws_url) as ws,
    ):
        for seq in range(2):
            ws.send(GOOD)
            header, _ = next_answer(ws)
            assert header == {**header, "type": "error", "code": "bad_output", "seq": seq}
        assert bridge.thread.is_alive()


def test_supervisor_restarts_a_killed_triton_and_streams_resume(own_triton, caplog):
    caplog.set_level(logging.WARNING, logger="serving.supervisor")
    supervisor = TritonSupervisor(own_triton, first_backoff_s=0.2)
    supervisor.start()
    # frames through shared memory: the regions die with Triton, the bridge registers new ones
    settings = bridge_settings(
        own_triton.settings.grpc_url, request_timeout_s=3.0, triton_shm_key=own_triton.settings.shm_key
    )
    try:
        with RunningBridge(settings) as bridge, open_stream(bridge.ws_url) as ws:
            ws.send(GOOD)
            assert next_answer(ws)[0]["type"] == "depth"
            assert metric(bridge.url, "depthstream_shared_memory_regions") == 1
            left_by_one = len(list(Path("/dev/shm").glob(f"{own_triton.shm_prefix}*")))  # its own prefix
            assert left_by_one >= 1, "the Python backend maps its memory under the server's prefix"
            killed = own_triton.process.pid
            os.kill(killed, signal.SIGKILL)  # as the OOM killer does: the server alone
            assert wait_until(lambda: supervisor.restarts == 1, timeout_s=60), "restarted"
            assert own_triton.process.pid != killed and own_triton.process.poll() is None
            # the killed server's Python-backend memory was removed, not left beside the new one's
            assert len(list(Path("/dev/shm").glob(f"{own_triton.shm_prefix}*"))) == left_by_one

            def answered() -> bool:
                ws.send(GOOD)
                return next_answer(ws)[0]["type"] == "depth"

            assert wait_until(answered, timeout_s=30, interval_s=0.5), "the stream resumes by itself"
            # the first frame may have found its region unknown to the new Triton (resent over
            # plain gRPC, the region let go): the next one goes through a new region
            assert answered()
            assert metric(bridge.url, "depthstream_shared_memory_regions") == 1, "through a new region"
    finally:
        supervisor.stop()
        supervisor.join()
    said = caplog.text
    assert f"tritonserver (pid {killed}) was killed by SIGKILL" in said and "OOM killer" in said
    assert "restarting tritonserver in" in said and "tritonserver is back" in said


def test_supervisor_gives_up_loudly_after_repeated_failures(own_triton, tmp_path, caplog):
    gave_up = threading.Event()
    supervisor = TritonSupervisor(own_triton, on_give_up=gave_up.set, max_restarts=2, first_backoff_s=0.1)
    supervisor.start()
    # every restart fails: the repository it would serve is gone
    own_triton.settings = dataclasses.replace(own_triton.settings, repository=tmp_path / "gone")
    os.kill(own_triton.process.pid, signal.SIGKILL)
    try:
        assert gave_up.wait(60), "the supervisor gives up and says so"
    finally:
        supervisor.stop()
        supervisor.join()
    assert supervisor.gave_up and supervisor.restarts == 0
    assert "failed 2 times in a row; giving up" in caplog.text
    assert caplog.text.count("did not come back") == 2
