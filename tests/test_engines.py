"""ONNX Runtime and OpenVINO on one model.onnx: the same numbers, and the runtime that serves a
model chosen by measurement on the machine (a runtime made slow on purpose loses)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from depthstream import accelerator, engine_choice, engines, runtime
from depthstream.model_config import CONFIG_FILE, ONNX_FILE, VERSION, parse
from tests.helpers import photo

CPU = accelerator.CPU
MODEL = "depth_anything_v2_small_252"


@pytest.mark.parametrize("size", [(640, 480), (360, 500), (97, 31), (1920, 1080)])
def test_openvino_fp32_equals_onnx_runtime_within_1e4_of_range(tiny_repository, size):
    onnx = tiny_repository / MODEL / VERSION / ONNX_FILE
    ort_session, _ = runtime.open_session(onnx, [CPU], 1)
    ov_session, _ = runtime.open_session(onnx, [CPU], 1, runner=runtime.OPENVINO_F32)
    assert ov_session.get_providers() == ["OpenVINO CPU f32"]
    for name in ("astronaut", "coffee"):
        batch = photo(*size, name)[None]
        expected = runtime.infer(ort_session, batch)
        got = runtime.infer(ov_session, batch)
        assert got.shape == expected.shape == (1, size[1], size[0])
        assert np.abs(got - expected).max() <= 1e-4 * np.ptp(expected)


class _Slowed:
    def __init__(self, session, extra_s: float) -> None:
        self.session, self.extra_s = session, extra_s

    def run(self, *args):
        time.sleep(self.extra_s)
        return self.session.run(*args)

    def get_providers(self):
        return self.session.get_providers()


def slow_engine(monkeypatch, engine: engines.Engine, extra_s: float = 0.2) -> None:
    """Make one runtime slow on purpose: every run of its sessions sleeps first."""
    real = runtime.open_session

    def opened(path, providers, threads, cache_dir=None, runner=runtime.ONNXRUNTIME):
        session, warning = real(path, providers, threads, cache_dir, runner)
        return (_Slowed(session, extra_s) if runner.engine == engine else session), warning

    monkeypatch.setattr(runtime, "open_session", opened)


@pytest.fixture
def model_dir(tiny_repository, tmp_path):
    """A copy of one tiny model with no speed or verdict recorded."""
    copy = tmp_path / MODEL
    shutil.copytree(tiny_repository / MODEL, copy)
    for record in (runtime.SPEED_FILE, engine_choice.CHOICE_FILE):
        (copy / record).unlink(missing_ok=True)
    return copy


@pytest.mark.parametrize("slow, winner", [("onnxruntime", "openvino"), ("openvino", "onnxruntime")])
def test_the_runtime_made_slow_on_purpose_loses(model_dir, monkeypatch, slow, winner):
    slow_engine(monkeypatch, engines.Engine(slow))
    choice = engine_choice.choose(model_dir, [CPU], threads=1)
    assert choice.runner.engine == winner
    verdict = engine_choice.read_verdicts(model_dir)[engine_choice.machine_key(1)]
    assert verdict["engine"] == winner and verdict[f"{slow}_ms"] > 200
    assert choice.speed.ms == verdict[f"{winner}_ms"] < 200
    # both speeds recorded, each under its own runtime's key
    keys = runtime.read_speeds(model_dir)
    assert runtime.machine_description("OpenVINO CPU f32", 1) in keys
    assert runtime.machine_description(CPU, 1) in keys


def test_a_verdict_is_kept_on_this_machine_and_judged_again_on_another(model_dir, monkeypatch):
    slow_engine(monkeypatch, engines.Engine.ONNXRUNTIME)
    assert engine_choice.choose(model_dir, [CPU], threads=1).runner.engine == "openvino"
    judged = []
    monkeypatch.setattr(engine_choice, "judge", lambda *args: judged.append(args) or pytest.fail("judged"))
    again = engine_choice.choose(model_dir, [CPU], threads=1)
    assert (again.runner.engine, judged) == ("openvino", [])
    assert again.why == "OpenVINO: judged before here"
    monkeypatch.undo()
    xeon = "Intel(R) Xeon(R) Processor [amx_bf16 amx_int8 avx512_bf16 avx512_vnni avx512f avx2]"
    monkeypatch.setattr(accelerator, "cpu_identity", lambda cpuinfo=None: xeon)
    slow_engine(monkeypatch, engines.Engine.OPENVINO)
    assert engine_choice.choose(model_dir, [CPU], threads=1).runner.engine == "onnxruntime"
    assert len(engine_choice.read_verdicts(model_dir)) == 2


def test_without_openvino_onnx_runtime_serves_and_says_why(model_dir, monkeypatch):
    monkeypatch.setattr(engines, "openvino_version", lambda: None)
    choice = engine_choice.choose(model_dir, [CPU], threads=1)
    assert choice.runner == runtime.ONNXRUNTIME and choice.why == f"ONNX Runtime: {engine_choice.NO_OPENVINO}"
    with pytest.raises(RuntimeError, match="OpenVINO is not installed"):
        engine_choice.choose(model_dir, [CPU], threads=1, wanted="openvino")


def test_an_operator_forces_either_runtime_and_int8_stays_on_onnx_runtime(model_dir, monkeypatch):
    slow_engine(monkeypatch, engines.Engine.OPENVINO)
    forced = engine_choice.choose(model_dir, [CPU], threads=1, wanted="openvino")
    assert forced.runner == runtime.OPENVINO_F32 and forced.why == "OpenVINO: forced"
    int8 = model_dir.with_name(f"{MODEL}_int8")
    model_dir.rename(int8)
    assert engine_choice.for_model(int8, [CPU], 1, wanted="openvino").runner == runtime.ONNXRUNTIME
    with pytest.raises(ValueError, match="engine must be one of"):
        engine_choice.choose(int8, [CPU], 1, wanted="tensorflow")


def test_the_served_config_names_the_runtime_and_a_writable_cache(tiny_repository, tmp_path):
    from serving.repository import generate

    generate(tiny_repository, tmp_path / "served", [MODEL], threads=1, engine="openvino")
    config = parse((tmp_path / "served" / MODEL / CONFIG_FILE).read_text())
    params = {key: value.string_value for key, value in config.parameters.items()}
    assert (params["engine"], params["precision"], params["intra_op_threads"]) == ("openvino", "f32", "1")
    assert params["openvino_cache"].startswith(str((tmp_path / "compiled").resolve()))
    assert params["depthstream_speed_measured_on"].endswith(engines.OPENVINO_SETTINGS)


@pytest.mark.integration  # starts its own tritonserver
def test_a_real_triton_serves_a_model_on_openvino(tiny_repository, tmp_path):
    """The Python backend runs the model on OpenVINO when its config says so: the same depth
    as ONNX Runtime, and Triton's log names the runtime."""
    import tritonclient.grpc as grpcclient

    from serving.triton import EmbeddedTriton, TritonSettings

    settings = TritonSettings.on_free_ports(
        tiny_repository, tmp_path, threads=1, models=(MODEL,), engine="openvino"
    )
    log_path = tmp_path / "triton.log"
    session, _ = runtime.open_session(tiny_repository / MODEL / VERSION / ONNX_FILE, [CPU], 1)
    with EmbeddedTriton(settings, log_path=log_path):
        client = grpcclient.InferenceServerClient(settings.grpc_url)
        for size in ((640, 480), (97, 31)):
            batch = photo(*size)[None]
            image = grpcclient.InferInput("IMAGE", list(batch.shape), "UINT8")
            image.set_data_from_numpy(batch)
            depth = client.infer(MODEL, [image]).as_numpy("DEPTH")
            expected = runtime.infer(session, batch)
            assert np.abs(depth - expected).max() <= 1e-4 * np.ptp(expected)
    assert f"{MODEL}: OpenVINO runs it on OpenVINO CPU f32" in log_path.read_text()


def test_openvino_forced_without_it_is_refused_at_start(monkeypatch, tmp_path):
    from depthstream.settings import SettingsError
    from serving.triton import TritonSettings

    monkeypatch.setattr("serving.triton.openvino_version", lambda: None)
    with pytest.raises(SettingsError, match="--engine / TRITON_ENGINE must be auto or onnxruntime"):
        TritonSettings(repository=tmp_path, engine="openvino")
    with pytest.raises(SettingsError, match="one of auto, onnxruntime, openvino"):
        TritonSettings(repository=tmp_path, engine="fast")


class _Answers:
    """A session whose depth is replaced (OpenVINO answering otherwise than ONNX Runtime)."""

    def __init__(self, session, answer) -> None:
        self.session, self.answer = session, answer

    def run(self, *args):
        return [self.answer(out) for out in self.session.run(*args)]

    def get_providers(self):
        return self.session.get_providers()


@pytest.mark.parametrize(
    "answer, why",
    [
        (lambda depth: np.zeros((0, 0, 0), np.float32), "its depth is shaped [0, 0, 0]"),
        (lambda depth: depth * 1.5, "its depth differs from ONNX Runtime's"),
    ],
)
def test_an_openvino_that_answers_otherwise_never_serves_however_fast(model_dir, monkeypatch, answer, why):
    """Seen: OpenVINO's CPU plugin returned an empty depth for Depth Anything 3's graph. Made
    faster on purpose here, it still loses: the verdict says why and is recorded."""
    slow_engine(monkeypatch, engines.Engine.ONNXRUNTIME)
    real = runtime.open_session

    def opened(path, providers, threads, cache_dir=None, runner=runtime.ONNXRUNTIME):
        session, warning = real(path, providers, threads, cache_dir, runner)
        return (_Answers(session, answer) if runner.engine == engines.Engine.OPENVINO else session), warning

    monkeypatch.setattr(runtime, "open_session", opened)
    choice = engine_choice.choose(model_dir, [CPU], threads=1)
    assert choice.runner.engine == "onnxruntime" and why in choice.why
    verdict = engine_choice.read_verdicts(model_dir)[engine_choice.machine_key(1)]
    assert verdict["engine"] == "onnxruntime" and why in verdict["openvino_failed"]
