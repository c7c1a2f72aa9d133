"""Fast, in-process: the gateway's shared-memory path against a stand-in Triton that reads and
writes the regions as Triton does (tests/fake_triton.py), so ``make mutate`` reaches it. The
real Triton's side is in tests/test_shared_memory.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.settings import BridgeSettings
from bridge.triton import TritonGateway, TritonTimeout
from tests.app_client import answer, hello, jpeg
from tests.fake_triton import FakeTriton

MODEL = "depth_anything_v2_small"
URL = "127.0.0.1:8001"  # on this host: the gateway offers shared memory
KEY = "shm-key-of-this-fake-triton"


def red(batch: np.ndarray) -> np.ndarray:
    """The stand-in's depth: each pixel's red value, so a frame's depth is that frame's own."""
    return batch[..., 0].astype(np.float32)


@pytest.fixture
def fake() -> FakeTriton:
    fake = FakeTriton()
    fake.depth_of_pixels = red
    fake.shm_key = KEY
    return fake


def gateway(fake: FakeTriton, key: str = KEY, timeout_s: float = 5.0) -> TritonGateway:
    shared_memory = BridgeSettings(triton_url=URL, triton_shm_key=key).shared_memory_for(URL)
    return TritonGateway(URL, timeout_s, client=fake, shared_memory=shared_memory)


def frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    sizes = [(64, 48), (31, 17), (48, 64), (120, 90)]
    return [rng.integers(0, 256, (*sizes[i % 4][::-1], 3), dtype=np.uint8) for i in range(count)]


def run_frames(gate: TritonGateway, batch: list[np.ndarray], at_once: int) -> list[np.ndarray]:
    async def run() -> list[np.ndarray]:
        queue = list(enumerate(batch))
        depths: list = [None] * len(batch)

        async def worker() -> None:
            while queue:
                i, rgb = queue.pop(0)
                depths[i] = (await gate.infer(MODEL, rgb)).depth

        await asyncio.gather(*(worker() for _ in range(at_once)))
        return depths

    return asyncio.run(run())


def test_frames_four_at_a_time_each_get_their_own_depth_through_their_region(fake):
    fake.delay_s = 0.005  # requests overlap
    gate = gateway(fake)
    batch = frames(40)
    depths = run_frames(gate, batch, at_once=4)
    for i, (rgb, depth) in enumerate(zip(batch, depths, strict=True)):
        np.testing.assert_array_equal(depth, red(rgb), err_msg=f"frame {i}")
    assert fake.calls["register_system_shared_memory"] == gate.regions.registered == 4, (
        "one per request in flight"
    )
    assert fake.most_in_flight == 4
    prefix = gate.regions.prefix
    assert len(list(Path("/dev/shm").glob(f"{prefix}*"))) == 4
    asyncio.run(gate.close())
    assert fake.regions == {}, "closing unregisters every region"
    assert list(Path("/dev/shm").glob(f"{prefix}*")) == [], "and unlinks it"


def test_the_depth_read_is_a_copy_the_next_frame_cannot_overwrite(fake):
    gate = gateway(fake)
    first, second = frames(2)[0], frames(2)[0][::-1].copy()

    async def run() -> tuple[np.ndarray, np.ndarray]:
        return (await gate.infer(MODEL, first)).depth, (await gate.infer(MODEL, second)).depth

    depth_first, _ = asyncio.run(run())
    assert gate.regions.registered == 1, "both frames went through the same region"
    np.testing.assert_array_equal(depth_first, red(first))


def test_an_abandoned_region_is_retired_and_unregistered_once_triton_is_done_with_it(fake):
    gate = gateway(fake, timeout_s=5.0)
    rgb = frames(1)[0]

    async def run() -> None:
        original = fake.infer

        async def still_running(*args, **kwargs):  # Triton runs on when its client goes away
            name = kwargs["inputs"][0]._input.parameters["shared_memory_region"].string_param
            fake.region_requests[name] = fake.region_requests.get(name, 0) + 1

            async def server_side() -> None:
                await asyncio.sleep(0.3)
                fake.region_requests[name] -= 1

            await asyncio.shield(asyncio.ensure_future(server_side()))
            return await original(*args, **kwargs)

        fake.infer = still_running
        task = asyncio.ensure_future(gate.infer(MODEL, rgb))
        await asyncio.sleep(0.05)
        task.cancel()  # the client left mid-frame
        with pytest.raises(asyncio.CancelledError):
            await task
        (abandoned,) = fake.regions  # Triton's name for it
        assert gate.regions.in_use == 0 and not gate.regions.free, "never back in the pool"
        assert gate.regions.registered == 1, "counted while it retires"
        assert not Path(f"/dev/shm/{gate.regions.prefix}-1").exists(), "unlinked at once"
        await asyncio.sleep(0.1)
        assert abandoned in fake.regions, "Triton refuses to let it go while it runs"
        fake.infer = original
        np.testing.assert_array_equal((await gate.infer(MODEL, rgb)).depth, red(rgb))
        assert gate.regions.made == 2, "the next frame gets a fresh region"
        await asyncio.sleep(0.8)  # the abandoned run ends: the retry lets it go
        assert abandoned not in fake.regions
        await gate.close()

    asyncio.run(run())


def test_a_timeout_retires_the_region_too(fake):
    gate = gateway(fake, timeout_s=0.05)
    fake.delay_s = 0.2

    async def run() -> None:
        with pytest.raises(TritonTimeout):
            await gate.infer(MODEL, frames(1)[0])
        assert gate.regions.in_use == 0 and not gate.regions.free and gate.regions.made == 1
        await gate.close()

    asyncio.run(run())


def test_a_triton_that_refuses_the_key_gets_plain_grpc_and_is_asked_once(fake):
    gate = gateway(fake, key="another-key")
    batch = frames(3)
    for rgb, depth in zip(batch, run_frames(gate, batch, at_once=1), strict=True):
        np.testing.assert_array_equal(depth, red(rgb))
    assert fake.calls["register_system_shared_memory"] == 1
    assert gate.regions.registered == 0 and "restricted" in gate.regions.refused
    assert fake.regions == {}


def test_a_restarted_triton_gets_the_frame_over_grpc_then_a_new_region(fake):
    gate = gateway(fake)
    rgb = frames(1)[0]

    async def run() -> None:
        await gate.infer(MODEL, rgb)
        fake.restart()
        np.testing.assert_array_equal((await gate.infer(MODEL, rgb)).depth, red(rgb))
        assert gate.regions.in_use == 0 and not gate.regions.free, "the region Triton forgot is let go"
        np.testing.assert_array_equal((await gate.infer(MODEL, rgb)).depth, red(rgb))
        assert len(gate.regions.free) == 1 and gate.regions.made == 2
        await gate.close()

    asyncio.run(run())


def test_a_triton_on_another_host_never_sees_a_region(fake):
    far = BridgeSettings(triton_url="triton.example:8001", triton_shm_key=KEY)
    assert far.shared_memory_for("triton.example:8001") is None
    gate = TritonGateway("triton.example:8001", 5.0, client=fake, shared_memory=None)
    rgb = frames(1)[0]
    np.testing.assert_array_equal(asyncio.run(gate.infer(MODEL, rgb)).depth, red(rgb))
    assert "register_system_shared_memory" not in fake.calls


def test_the_bridge_counts_its_regions_on_metrics(fake):
    settings = BridgeSettings(triton_url=URL, triton_shm_key=KEY, default_model=MODEL)
    with TestClient(create_app(settings, client_factory=lambda url: fake)) as client:
        assert regions_on(client) == 0.0, "none before a frame"
        with client.websocket_connect("/ws") as ws:
            hello(ws)
            ws.send_bytes(jpeg())
            header, _ = answer(ws)
            assert header["type"] == "depth"
        assert regions_on(client) == 1.0 == len(fake.regions)


def regions_on(client: TestClient) -> float:
    text = client.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("depthstream_shared_memory_regions{"))
    return float(line.split()[-1])


def test_triton_knows_a_region_by_a_secret_name_and_a_released_region_holds_no_frame(fake):
    gate = gateway(fake)
    rgb = frames(1)[0]

    async def run() -> None:
        await gate.infer(MODEL, rgb)
        (region,) = gate.regions.free
        name, key = region.name, region.key
        assert name.startswith(f"{key}-") and len(name) == len(key) + 33, (
            "the /dev/shm name, and 128 secret bits"
        )
        assert list(fake.regions) == [name]
        seen = np.frombuffer(
            fake.regions[name].buf, np.uint8, count=sum(s for s in (rgb.size, rgb.size // 3 * 4))
        )
        assert not seen.any(), "the frame and its depth were zeroed when the region was released"
        await gate.close()

    asyncio.run(run())


def test_abandoned_requests_beyond_a_few_fall_back_to_grpc_instead_of_pinning_more_memory(fake):
    from bridge.shared_memory import MAX_RETIRING

    gate = gateway(fake, timeout_s=0.02)
    fake.delay_s = 0.05
    rgb = frames(1)[0]

    async def run() -> None:
        held = {}  # Triton refuses to let a region go while a (never ending) request holds it
        fake.region_requests = type("Busy", (dict,), {"get": lambda self, name, default=0: 1})(held)
        for _ in range(MAX_RETIRING + 3):
            with pytest.raises(TritonTimeout):
                await gate.infer(MODEL, rgb)
        assert gate.regions.made == MAX_RETIRING, "no region made beyond the ceiling"
        assert len(gate.regions.retiring) == MAX_RETIRING
        fake.delay_s = 0.0
        np.testing.assert_array_equal((await gate.infer(MODEL, rgb)).depth, red(rgb))  # over plain gRPC
        assert gate.regions.made == MAX_RETIRING
        for task in gate.regions.retiring:
            task.cancel()

    asyncio.run(run())


def test_a_refusal_is_asked_again_later_not_never(fake):
    from bridge.shared_memory import REFUSED_RETRY_S

    gate = gateway(fake, key="another-key")
    rgb = frames(1)[0]

    async def run() -> None:
        await gate.infer(MODEL, rgb)
        assert gate.regions.refused is not None
        fake.shm_key = "another-key"  # Triton now takes this key (restarted with it)
        await gate.infer(MODEL, rgb)
        assert gate.regions.made == 1, "not asked again at once"
        gate.regions.refused_at -= REFUSED_RETRY_S + 1
        await gate.infer(MODEL, rgb)
        assert len(gate.regions.free) == 1 and len(fake.regions) == 1, "asked again, and taken"
        await gate.close()

    asyncio.run(run())


def test_only_a_loopback_address_is_offered_shared_memory():
    settings = BridgeSettings(triton_shm_key=KEY)
    assert settings.shared_memory_for("127.0.0.2:8001") is not None
    assert settings.shared_memory_for("[::1]:8001") is not None
    assert settings.shared_memory_for("127.0.0.1.example.com:8001") is None, "a name, not an address"
    assert settings.shared_memory_for("10.0.0.5:8001") is None
