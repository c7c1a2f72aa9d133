"""Frames through system shared memory to a real Triton on this host: each frame gets its own
depth, regions never leak, an abandoned request's region is never reused, and plain gRPC takes
over where Triton refuses the regions or forgot them (a restart)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from bridge.settings import BridgeSettings, SettingsError
from bridge.triton import TritonGateway, TritonTimeout
from depthstream.contract import DEPTH_ANYTHING_V2_SMALL
from depthstream.request import SHM_KEY_HEADER
from serving.triton import EmbeddedTriton
from tests.helpers import photo
from tests.servers import ARTIFACTS, triton_settings
from tests.wire import jpeg, metric, next_answer, open_stream

MODEL = DEPTH_ANYTHING_V2_SMALL.name
SHM = Path("/dev/shm")


def gateway(triton: EmbeddedTriton, key: str | None = None, timeout_s: float = 10.0) -> TritonGateway:
    """A gateway passing frames through shared memory, with Triton's key unless another is given."""
    url = triton.settings.grpc_url
    settings = BridgeSettings(triton_url=url, triton_shm_key=triton.settings.shm_key if key is None else key)
    return TritonGateway(url, timeout_s, shared_memory=settings.shared_memory_for(url))


def registered_with(triton: EmbeddedTriton, prefix: str) -> list[str]:
    """The regions Triton holds registered under a bridge's prefix (asked with the shm key)."""
    with grpcclient.InferenceServerClient(triton.settings.grpc_url) as client:
        status = client.get_system_shared_memory_status(headers={SHM_KEY_HEADER: triton.settings.shm_key})
    return sorted(name for name in status.regions if name.startswith(prefix))


def plain_depth(triton: EmbeddedTriton, rgb: np.ndarray) -> np.ndarray:
    async def infer() -> np.ndarray:
        plain = TritonGateway(triton.settings.grpc_url, 10.0)
        try:
            return (await plain.infer(MODEL, rgb)).depth
        finally:
            await plain.close()

    return asyncio.run(infer())


def frames_of_many_sizes(count: int) -> list[np.ndarray]:
    """Distinct frames (each its own photograph crop), of changing sizes: a stale or misplaced
    depth in a reused region cannot pass for the right one."""
    sizes = [(64, 48), (48, 64), (96, 40), (33, 17), (120, 90)]
    base = photo(240, 180)
    frames = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        x, y = (7 * i) % (240 - width), (5 * i) % (180 - height)
        frames.append(np.ascontiguousarray(base[y : y + height, x : x + width]))
    return frames


def test_a_hundred_frames_four_at_a_time_each_get_their_own_depth_and_regions_do_not_leak(triton):
    frames = frames_of_many_sizes(100)
    expected = [plain_depth(triton, rgb) for rgb in frames[:10]]

    async def run() -> tuple[list[np.ndarray], int, list[str], str]:
        shared = gateway(triton)
        queue = list(enumerate(frames))
        depths: list[np.ndarray | None] = [None] * len(frames)

        async def worker() -> None:
            while queue:
                i, rgb = queue.pop(0)
                depths[i] = (await shared.infer(MODEL, rgb)).depth

        await asyncio.gather(*(worker() for _ in range(4)))
        held, names = shared.regions.registered, registered_with(triton, shared.regions.prefix)
        await shared.close()
        return depths, held, names, shared.regions.prefix

    depths, held, names, prefix = asyncio.run(run())
    for i, (rgb, depth) in enumerate(zip(frames, depths, strict=True)):
        assert depth.shape == rgb.shape[:2], f"frame {i}"
        if i < len(expected):
            np.testing.assert_array_equal(depth, expected[i], err_msg=f"frame {i} through shared memory")
    # frames of one size are different crops: had a region's depth been read for another frame,
    # two frames would share a depth map
    assert len({depth.tobytes() for depth in depths}) == len(frames)
    assert 1 <= held <= 4, "one region per request in flight, reused after"
    assert len(names) == held, "Triton holds exactly the regions the bridge holds"
    assert registered_with(triton, prefix) == [], "closing unregisters them"
    assert list(SHM.glob(f"{prefix}*")) == [], "and unlinks them"


def test_frames_through_shared_memory_equal_plain_grpc_exactly(triton):
    rgb = photo(160, 120)

    async def run() -> np.ndarray:
        shared = gateway(triton)
        try:
            depth = (await shared.infer(MODEL, rgb)).depth
            assert shared.regions.registered == 1, "it went through a region"
            return depth
        finally:
            await shared.close()

    np.testing.assert_array_equal(asyncio.run(run()), plain_depth(triton, rgb))


def test_a_wrong_key_falls_back_to_plain_grpc_and_says_why(triton, caplog):
    rgb = photo(64, 48)

    async def run() -> tuple[np.ndarray, int, str | None]:
        refused = gateway(triton, key="not-the-key-of-this-triton")
        try:
            depth = (await refused.infer(MODEL, rgb)).depth
            depth_again = (await refused.infer(MODEL, rgb)).depth  # asked once, not per frame
            np.testing.assert_array_equal(depth, depth_again)
            return depth, refused.regions.registered, refused.regions.refused
        finally:
            await refused.close()

    depth, held, refused = asyncio.run(run())
    np.testing.assert_array_equal(depth, plain_depth(triton, rgb))
    assert held == 0 and "restricted" in refused
    assert caplog.text.count("does not take shared memory from this bridge") == 1


def test_settings_use_shared_memory_only_with_a_triton_on_this_host():
    settings = BridgeSettings()
    size, key = settings.shared_memory_for("127.0.0.1:8001")
    assert size == settings.max_pixels * (3 + 4) and key == ""
    assert settings.shared_memory_for("localhost:8001") is not None
    assert settings.shared_memory_for("triton.depthstream.svc:8001") is None
    assert settings.shared_memory_for("dns:///triton-headless:8001") is None
    assert BridgeSettings(triton_shm="off").shared_memory_for("127.0.0.1:8001") is None
    with pytest.raises(SettingsError, match="--triton-shm .* one of auto, off"):
        BridgeSettings(triton_shm="always").validate()


@pytest.fixture(scope="module")
def slow_triton(tiny_repository, tmp_path_factory):
    """Each run 1.5 s: a request can be abandoned while Triton still runs it."""
    settings = triton_settings(
        tiny_repository, tmp_path_factory.mktemp("slow-shm"), models=(MODEL,), simulated_extra_ms=1500
    )
    with EmbeddedTriton(settings, log_path=ARTIFACTS / "tritonserver-shm.log") as server:
        yield server


def test_an_abandoned_requests_region_is_retired_so_its_late_depth_lands_in_no_other_frame(slow_triton):
    first, second = photo(64, 48, "astronaut"), photo(64, 48, "coffee")

    async def run() -> tuple[np.ndarray, list[str], list[str], list[str]]:
        shared = gateway(slow_triton, timeout_s=10.0)
        try:
            with pytest.raises(TritonTimeout):
                await shared.infer(MODEL, first, timeout_s=0.3)  # Triton goes on running it
            abandoned = f"{shared.regions.prefix}-1"  # its /dev/shm name
            assert shared.regions.in_use == 0 and not shared.regions.free, "never back in the pool"
            assert not (SHM / abandoned).exists(), "unlinked at once"
            # the next frame starts while Triton still writes the first one's depth somewhere
            depth = (await shared.infer(MODEL, second)).depth
            await asyncio.sleep(0.5)
            return (
                depth,
                registered_with(slow_triton, shared.regions.prefix),
                [f"{shared.regions.prefix}-{i}" for i in range(1, shared.regions.made + 1)],
                [abandoned],
            )
        finally:
            await shared.close()

    depth, still_registered, made, abandoned = asyncio.run(run())
    np.testing.assert_array_equal(depth, plain_depth(slow_triton, second), err_msg="its own depth")
    assert made == [*abandoned, made[-1]] and len(made) == 2, "a fresh region, never the abandoned one"
    assert not [n for n in still_registered if n.startswith(f"{abandoned[0]}-")], (
        "Triton let it go when its run ended"
    )
    assert len(still_registered) == 1, "Triton holds the fresh region only"


@pytest.mark.integration  # starts its own tritonserver
def test_after_triton_restarts_the_frame_is_retried_over_grpc_and_new_regions_follow(
    tiny_repository, tmp_path
):
    settings = triton_settings(tiny_repository, tmp_path, models=(MODEL,))
    server = EmbeddedTriton(settings, log_path=ARTIFACTS / "tritonserver-shm-restart.log").start()
    rgb = photo(64, 48)
    try:

        async def run() -> None:
            shared = gateway(server)
            try:
                before = (await shared.infer(MODEL, rgb)).depth
                os.killpg(server.process.pid, signal.SIGKILL)  # its registrations die with it
                server.process.wait()
                server.start()  # same ports and keys, none of this bridge's regions
                after = (await shared.infer(MODEL, rgb)).depth  # Triton says the region is unknown
                np.testing.assert_array_equal(after, before)
                assert shared.regions.in_use == 0 and not shared.regions.free, "the unknown region was let go"
                again = (await shared.infer(MODEL, rgb)).depth
                np.testing.assert_array_equal(again, before)
                assert len(shared.regions.free) == 1 and shared.regions.made == 2, (
                    "a new one, registered anew"
                )
                names = registered_with(server, shared.regions.prefix)
                assert len(names) == 1 and names[0].startswith(f"{shared.regions.prefix}-2-")
            finally:
                await shared.close()

        asyncio.run(run())
    finally:
        server.stop()
    assert list(SHM.glob(f"{server.shm_prefix}*")) == [], "no Python-backend memory left behind"


def test_a_client_that_leaves_leaves_no_region_behind(bridge, triton):
    frames = [jpeg(64, 48, name) for name in ("astronaut", "coffee", "chelsea")]
    held = []
    for _ in range(2):  # a client, then another after it left
        with open_stream(bridge.ws_url) as ws:
            for i in range(12):
                ws.send(frames[i % len(frames)])
                assert next_answer(ws)[0]["type"] == "depth"
        held.append(metric(bridge.url, "depthstream_shared_memory_regions"))
        # the session bridge is the one bridge left on this Triton: what Triton holds is its
        live = [name for name in registered_with(triton, "ds-") if (SHM / name.rsplit("-", 1)[0]).exists()]
        assert len(live) == held[-1], "Triton holds exactly the regions the bridge counts"
    assert held[0] >= 1, "the session bridge passes frames through shared memory"
    assert held[1] == held[0], "a region is reused by the next client, not added per client"
