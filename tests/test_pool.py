"""Several Triton endpoints: sessions spread over two real tritonservers and move when one dies."""

from __future__ import annotations

import os
import signal

import pytest

from depthstream.contract import DEPTH_ANYTHING_V2_SMALL
from serving.triton import EmbeddedTriton
from tests.servers import ARTIFACTS, RunningBridge, bridge_settings, triton_settings
from tests.wire import jpeg, metric, next_answer, open_stream

GOOD = jpeg(64, 48)


@pytest.fixture
def two_tritons(tiny_repository, tmp_path):
    servers = [
        EmbeddedTriton(
            triton_settings(tiny_repository, tmp_path / name, models=(DEPTH_ANYTHING_V2_SMALL.name,)),
            log_path=ARTIFACTS / f"tritonserver-{name}.log",
        )
        for name in ("a", "b")
    ]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_sessions_spread_and_move_when_an_endpoint_dies(two_tritons):
    urls = ",".join(server.settings.grpc_url for server in two_tritons)
    with RunningBridge(bridge_settings(urls, request_timeout_s=3.0)) as bridge:
        streams = [open_stream(bridge.ws_url) for _ in range(4)]
        sockets = [stream.__enter__() for stream in streams]
        try:
            for ws in sockets:
                ws.send(GOOD)
                assert next_answer(ws)[0]["type"] == "depth"
            per_endpoint = {
                server.settings.grpc_url: metric(
                    bridge.url, f'depthstream_endpoint_sessions{{endpoint="{server.settings.grpc_url}"}}'
                )
                for server in two_tritons
            }
            assert sorted(per_endpoint.values()) == [2, 2], per_endpoint

            dead = two_tritons[0]
            os.killpg(dead.process.pid, signal.SIGKILL)
            dead.process.wait()
            moved = 0
            for ws in sockets:
                ws.send(GOOD)
                header, _ = next_answer(ws)
                if header["type"] == "error":
                    assert header["code"] == "triton_unavailable" and "moved" in header["message"]
                    moved += 1
                    ws.send(GOOD)
                    header, _ = next_answer(ws)
                assert header["type"] == "depth", "every stream is answered, by the surviving server"
            assert moved == 2
            survivor = two_tritons[1].settings.grpc_url
            assert metric(bridge.url, f'depthstream_endpoint_sessions{{endpoint="{survivor}"}}') == 4
            assert bridge.thread.is_alive()
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
