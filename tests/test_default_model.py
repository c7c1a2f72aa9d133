"""The page starts live: the model a stream starts on, chosen from the speeds the serving side
recorded on its own machine (fast machine, slow machine, nothing recorded, explicit override),
carried through a real config to the bridge's API and the stream."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.catalog import ModelInfo
from bridge.default_model import LIVE_FPS, choose_default, estimated_fps
from bridge.settings import BridgeSettings
from depthstream.contract import DEFAULT_MODEL, MODELS
from tests.fake_triton import FakeTriton

# ms per 640x480 frame, the model alone, as the build machine measured them (make bench, 2 cores)
BUILD_MACHINE = {
    "depth_anything_v2_small": 605,
    "depth_anything_v2_small_int8": 394,
    "depth_anything_v2_small_364": 200,
    "depth_anything_v2_small_364_int8": 133,
    "depth_anything_v2_small_252": 85,
    "depth_anything_v2_small_252_int8": 54,
    "midas_dpt_beit_base_384": 585,
    "midas_dpt_beit_base_384_int8": 404,
}
STACK_MS = 40.0  # the stack's own time a frame, as live traffic might have measured it
LIVE_MS = 1000 / LIVE_FPS - STACK_MS  # the slowest model time that is still live


@pytest.fixture(autouse=True)
def own_work_here(monkeypatch):
    """The bridge's own work as timed at start, fixed: the tests choose on known figures."""
    monkeypatch.setattr("bridge.own_work.own_work_ms", lambda: STACK_MS)


def choose(models, configured="auto", stack_ms=STACK_MS):
    return choose_default(models, configured, stack_ms)


def served(speeds: dict[str, float | None], not_ready: frozenset[str] = frozenset()) -> list[ModelInfo]:
    return [ModelInfo(name, ready=name not in not_ready, ms_per_frame=speeds.get(name)) for name in MODELS]


def test_a_fast_machine_starts_on_the_reference_model():
    gpu_like = {name: 8.0 for name in MODELS}
    choice = choose(served(gpu_like))
    assert choice.model == DEFAULT_MODEL and "runs live here" in choice.reason


def test_the_build_machine_starts_on_the_most_accurate_live_preset():
    choice = choose(served(BUILD_MACHINE))
    assert choice.model == "depth_anything_v2_small_364_int8"  # 133 + 40 ms: ~5.8 frames/s end to end
    assert "~5.8 frames/s" in choice.reason and f">= {LIVE_FPS:.0f}" in choice.reason


def test_a_slower_machine_steps_down_to_what_is_live_there():
    slower = {name: ms * 1.4 for name, ms in BUILD_MACHINE.items()}  # 528 ms against 1.4 s: machines differ
    assert choose(served(slower)).model == "depth_anything_v2_small_252"


def test_when_nothing_is_live_the_fastest_is_picked_and_the_page_is_told():
    crawling = {name: ms * 20 for name, ms in BUILD_MACHINE.items()}
    choice = choose(served(crawling))
    assert choice.model == "depth_anything_v2_small_252_int8" and "no model runs live here" in choice.reason


def test_accuracy_comes_before_speed_at_the_threshold():
    at_the_line = {name: LIVE_MS for name in MODELS}
    assert choose(served(at_the_line)).model == DEFAULT_MODEL
    just_over = {**at_the_line, DEFAULT_MODEL: LIVE_MS + 1}
    assert choose(served(just_over)).model == "depth_anything_v2_small_int8"


def test_models_not_ready_or_without_a_record_are_judged_as_such():
    choice = choose(served(BUILD_MACHINE, not_ready=frozenset({"depth_anything_v2_small_364_int8"})))
    assert choice.model == "depth_anything_v2_small_252"
    unrecorded = choose(served({}))  # e.g. the NGC container: no speeds in its configs
    assert unrecorded.model == DEFAULT_MODEL and "no speeds" in unrecorded.reason


def test_an_explicit_default_wins():
    choice = choose(served(BUILD_MACHINE), "midas_dpt_beit_base_384")
    assert choice.model == "midas_dpt_beit_base_384" and "BRIDGE_DEFAULT_MODEL" in choice.reason


def test_estimates():
    assert estimated_fps(None, 5.0) is None and estimated_fps(0, 5.0) is None
    assert estimated_fps(100, 25.0) == pytest.approx(8.0)


def test_the_stacks_measured_time_decides_where_a_constant_factor_would_not():
    """On a BF16 engine the models run ~4x faster while the stack's time stays: a factor of
    the model's time would call the 518 twin live; the stack measured says it is not."""
    bf16_engine = {name: ms / 4 for name, ms in BUILD_MACHINE.items()}  # 518: 151 ms
    assert 1000 / (bf16_engine[DEFAULT_MODEL] * 1.3) >= LIVE_FPS  # what a factor of 1.3 would say
    assert choose(served(bf16_engine), stack_ms=60.0).model == "depth_anything_v2_small_int8"  # 98+60 ms
    assert choose(served(bf16_engine), stack_ms=5.0).model == DEFAULT_MODEL  # 151+5 ms: live


def test_the_stack_follows_live_frames_and_their_transport():
    from bridge.observed import ObservedTimes

    observed = ObservedTimes()
    assert observed.stack_ms() == STACK_MS, "before any frame: the bridge's own work, timed at start"
    for _ in range(6):
        observed.add_stack(0.012)  # 12 ms a frame in the bridge outside the inference
        observed.add("depth_anything_v2_small_252", 0.095)  # recorded 85: 10 ms of transport
    observed.follow(ModelInfo("depth_anything_v2_small_252", ready=True, ms_per_frame=85))
    assert observed.stack_ms() == pytest.approx(22.0)


@pytest.mark.parametrize("configured", ["auto", "midas_dpt_beit_base_384"])
def test_the_api_and_a_new_stream_follow_the_choice(configured):
    fake = FakeTriton()
    fake.ms_per_frame = dict(BUILD_MACHINE)
    app = create_app(
        BridgeSettings(triton_url="fake:8001", default_model=configured), client_factory=lambda url: fake
    )
    expected = "depth_anything_v2_small_364_int8" if configured == "auto" else configured
    with TestClient(app) as client:
        info = client.get("/api/models").json()
        assert info["default_model"] == expected and expected in info["default_reason"]
        assert info["live_fps"] == LIVE_FPS
        by_name = {model["name"]: model for model in info["models"]}
        assert by_name["depth_anything_v2_small_252_int8"]["ms_per_frame"] == 54
        assert by_name["depth_anything_v2_small_252_int8"]["estimated_fps"] == pytest.approx(
            estimated_fps(54, STACK_MS)
        )
        assert "Test CPU" in by_name["depth_anything_v2_small"]["measured_on"]
        with client.websocket_connect("/ws") as ws:
            assert json.loads(ws.receive_text())["model"] == expected


def test_estimates_and_the_default_follow_live_traffic_and_come_back():
    """The recorded 364 INT8 time is 133 ms; on live traffic it takes 500 ms (a busy machine):
    the API's estimate and the default follow what is observed and say so; once frames run at the
    recorded speed again, so do they."""
    fake = FakeTriton()
    fake.ms_per_frame = dict(BUILD_MACHINE)
    app = create_app(BridgeSettings(triton_url="fake:8001"), client_factory=lambda url: fake)
    busy_model = "depth_anything_v2_small_364_int8"

    def stream_frames(ws, count: int) -> None:
        from tests.app_client import answer, jpeg

        for _ in range(count):
            ws.send_bytes(jpeg())
            assert answer(ws)[0]["type"] == "depth"

    with TestClient(app) as client:
        assert client.get("/api/models").json()["default_model"] == busy_model
        with client.websocket_connect("/ws") as ws:
            assert json.loads(ws.receive_text())["model"] == busy_model
            fake.delay_s = 0.5
            stream_frames(ws, 6)
            info = client.get("/api/models").json()
            by_name = {model["name"]: model for model in info["models"]}
            assert by_name[busy_model]["ms_per_frame"] >= 450 and by_name[busy_model]["recorded_ms"] == 133
            assert info["default_model"] == "depth_anything_v2_small_252"
            assert "observed on live traffic" in info["default_reason"]
            fake.delay_s = 0.13
            stream_frames(ws, 12)
        info = client.get("/api/models").json()
        assert info["default_model"] == busy_model and "observed" not in info["default_reason"]
        assert {m["name"]: m for m in info["models"]}[busy_model]["recorded_ms"] is None


def test_a_metric_model_is_never_the_automatic_choice():
    """Metres answer another question than shape: live and fastest, a metric model still is not
    where the page opens (it is chosen by the user, in its own group)."""
    speeds = {name: (5.0 if MODELS[name].depth == "metric" else 2000.0) for name in MODELS}
    choice = choose(served(speeds))
    assert MODELS[choice.model].depth == "relative" and "no model runs live here" in choice.reason
