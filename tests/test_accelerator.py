"""The GPU path, as far as a machine without a GPU can check it: which ONNX Runtime `make setup`
installs, which execution providers a model asks for, and the fallback to the CPU with its
warning (really run here: this machine's ONNX Runtime cannot start CUDA)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from depthstream import accelerator, runtime
from depthstream.accelerator import CPU, CUDA, TENSORRT
from depthstream.model_config import CONFIG_FILE, MEASURED_ON_PARAM, MS_PER_FRAME_PARAM, parse

ROOT = Path(__file__).resolve().parent.parent


def fake_smi(returncode: int, stdout: str):
    def run(argv, **kwargs):
        assert argv == ["nvidia-smi", "-L"]
        return subprocess.CompletedProcess(argv, returncode, stdout, "")

    return run


def test_gpus_are_what_nvidia_smi_lists(monkeypatch):
    monkeypatch.setattr(accelerator.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n"
    assert accelerator.nvidia_gpus(fake_smi(0, listing)) == listing.strip().splitlines()
    # a driver that is not loaded: nvidia-smi is there and fails
    assert accelerator.nvidia_gpus(fake_smi(9, "NVIDIA-SMI has failed")) == []
    monkeypatch.setattr(accelerator.shutil, "which", lambda name: None)
    assert accelerator.nvidia_gpus(fake_smi(0, listing)) == []


@pytest.mark.parametrize(
    ("choice", "gpus", "gpu_build"),
    [
        ("auto", [], False),
        ("auto", ["GPU 0: NVIDIA L4"], True),
        ("cpu", ["GPU 0: NVIDIA L4"], False),
        ("gpu", [], True),
    ],
)
def test_the_gpu_build_where_there_is_a_gpu(choice, gpus, gpu_build):
    assert accelerator.wants_gpu_build(choice, gpus) is gpu_build


def test_an_unknown_onnxruntime_choice_is_refused():
    with pytest.raises(ValueError, match="auto, cpu or gpu"):
        accelerator.wants_gpu_build("rocm", [])


def test_the_gpu_requirements_swap_only_onnxruntime():
    text = (ROOT / "requirements.txt").read_text()
    assert accelerator.requirements_for(text, gpu_build=False) == text
    gpu = accelerator.requirements_for(text, gpu_build=True)
    removed = set(text.splitlines()) - set(gpu.splitlines())
    added = set(gpu.splitlines()) - set(text.splitlines())
    assert len(removed) == 1 and removed.pop().startswith("onnxruntime==")
    assert added == {accelerator.GPU_REQUIREMENT}
    with pytest.raises(ValueError, match="exactly once"):
        accelerator.requirements_for("numpy==1.26.4\n", gpu_build=True)


def run_setup_choice(tmp_path: Path, path_dirs: list[Path], choice: str = "auto") -> tuple[str, str]:
    """What `make setup` runs, with the system Python (before the virtualenv exists)."""
    target = tmp_path / "requirements.txt"
    env = {"PATH": os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"]), "ONNXRUNTIME": choice}
    done = subprocess.run(
        [
            "/usr/bin/python3",
            "-m",
            "depthstream.accelerator",
            "requirements",
            "requirements.txt",
            str(target),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return target.read_text(), done.stderr


def test_make_setup_picks_the_package_from_nvidia_smi(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    with_gpu, said = run_setup_choice(tmp_path, [fake_bin])
    assert accelerator.GPU_REQUIREMENT in with_gpu and "onnxruntime==" not in with_gpu
    assert "GPU build" in said and "NVIDIA H100" in said
    forced_cpu, said = run_setup_choice(tmp_path, [fake_bin], "cpu")
    assert forced_cpu == (ROOT / "requirements.txt").read_text() and "ONNXRUNTIME=cpu" in said
    without, said = run_setup_choice(tmp_path, [])
    assert without == (ROOT / "requirements.txt").read_text() and "CPU build" in said


@pytest.mark.parametrize(
    ("device", "available", "has_tensorrt", "providers"),
    [
        ("auto", [CPU], False, [CPU]),  # the CPU build
        ("auto", [TENSORRT, CUDA, CPU], False, [CUDA, CPU]),  # the GPU build, no TensorRT libraries
        ("auto", [TENSORRT, CUDA, CPU], True, [TENSORRT, CUDA, CPU]),
        ("cpu", [TENSORRT, CUDA, CPU], True, [CPU]),
        ("cuda", [CPU], False, [CUDA, CPU]),  # asked for: tried, so that the fallback says why
        ("tensorrt", [CPU], False, [TENSORRT, CUDA, CPU]),
    ],
)
def test_provider_order(device, available, has_tensorrt, providers):
    assert accelerator.providers_for(device, available, has_tensorrt) == providers


def test_gpu_providers_have_a_ceiling_on_what_a_new_frame_size_costs(tmp_path):
    trt = runtime.provider_options(TENSORRT, tmp_path)
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_profile_max_shapes"] == "IMAGE:4x1920x1920x3"  # one engine for the contract
    assert runtime.provider_options(CUDA, tmp_path)["cudnn_conv_algo_search"] == "HEURISTIC"
    assert runtime.provider_options(CPU, tmp_path) == {}


def tiny_onnx(tiny_repository) -> Path:
    return tiny_repository / "depth_anything_v2_small_252" / "1" / "model.onnx"


def test_a_gpu_provider_that_cannot_start_falls_back_to_the_cpu_with_a_warning(tiny_repository):
    session, warning = runtime.open_session(tiny_onnx(tiny_repository), [CUDA, CPU], threads=1)
    assert session.get_providers() == [CPU]
    assert CUDA in warning and "running on CPUExecutionProvider" in warning and "make setup" in warning
    session, warning = runtime.open_session(tiny_onnx(tiny_repository), [CPU], threads=1)
    assert warning is None


def test_the_embedded_triton_asks_for_the_gpu_and_records_where_it_ran(tiny_repository, tmp_path, caplog):
    from serving.repository import generate

    model = "depth_anything_v2_small_252"
    (tiny_repository / model / runtime.SPEED_FILE).unlink(missing_ok=True)
    with caplog.at_level("WARNING"):
        generate(tiny_repository, tmp_path / "cuda", [model], threads=1, device="cuda")
    config = parse((tmp_path / "cuda" / model / CONFIG_FILE).read_text())
    assert config.parameters["providers"].string_value == f"{CUDA},{CPU}"
    assert any(CUDA in record.message and "could not start" in record.message for record in caplog.records)
    # recorded under what was asked (CUDA), saying what really ran (the CPU)
    ((asked, speed),) = runtime.read_speeds(tiny_repository / model).items()
    assert f"{CUDA}," in asked and f"{CPU}," in speed.machine
    assert float(config.parameters[MS_PER_FRAME_PARAM].string_value) > 0
    assert config.parameters[MEASURED_ON_PARAM].string_value == speed.machine
    # so the next start does not time it again (nor the one after a fallback)
    measured = []
    real_measure = runtime.measure
    runtime.measure = lambda *args, **kwargs: measured.append(args) or real_measure(*args, **kwargs)
    try:
        generate(tiny_repository, tmp_path / "again", [model], threads=1, device="cuda")
    finally:
        runtime.measure = real_measure
    assert measured == []


@pytest.mark.integration  # starts its own tritonserver
def test_the_python_backend_model_logs_its_provider_and_the_fallback(tiny_repository, tmp_path):
    """A real tritonserver told to use CUDA on a machine without it: the model still loads on
    the CPU and answers, and Triton's log says so."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from serving.triton import EmbeddedTriton, TritonSettings

    model = "depth_anything_v2_small_252"
    settings = TritonSettings.on_free_ports(
        tiny_repository, tmp_path, threads=1, models=(model,), device="cuda"
    )
    log_path = tmp_path / "triton.log"
    with EmbeddedTriton(settings, log_path=log_path):
        client = grpcclient.InferenceServerClient(settings.grpc_url)
        image = grpcclient.InferInput("IMAGE", [1, 48, 64, 3], "UINT8")
        image.set_data_from_numpy(np.zeros((1, 48, 64, 3), np.uint8))
        assert client.infer(model, [image]).as_numpy("DEPTH").shape == (1, 48, 64)
    text = log_path.read_text()
    assert f"{model}: {CUDA} could not start, running on {CPU}" in text
    assert f"{model}: ONNX Runtime runs it on {CPU}" in text


def test_a_record_from_another_machine_is_stale_here(tiny_repository, tmp_path):
    """A repository exported on one machine and served on another is timed again where it is
    served, and the served config carries this machine's figure."""
    from serving.repository import generate

    model = "depth_anything_v2_small_252"
    model_dir = tiny_repository / model
    (model_dir / runtime.SPEED_FILE).unlink(missing_ok=True)
    elsewhere = runtime.Speed(
        5000.0, "16 x another CPU, 16 threads, CPUExecutionProvider, onnxruntime 1.32.0"
    )
    assert runtime.record_speed(model_dir, elsewhere.machine, elsewhere)
    generate(
        tiny_repository, tmp_path / "served", [model], threads=1, simulated_extra_ms=7, engine="onnxruntime"
    )
    here = runtime.recorded_speed(model_dir, runtime.machine_description(CPU, 1))
    assert here is not None and here.ms != elsewhere.ms
    assert runtime.read_speeds(model_dir) == {
        elsewhere.machine: elsewhere,
        runtime.machine_description(CPU, 1): here,
    }
    config = parse((tmp_path / "served" / model / CONFIG_FILE).read_text())
    # what the bridge reads: this machine's time, plus the slowdown asked for
    assert float(config.parameters[MS_PER_FRAME_PARAM].string_value) == pytest.approx(here.ms + 7, abs=0.1)
    assert runtime.speed_here(model_dir, [CPU], threads=1) == here  # recorded: not timed again


def test_a_record_taken_under_other_session_settings_is_not_served(tiny_repository):
    model_dir = tiny_repository / "depth_anything_v2_small_252"
    (model_dir / runtime.SPEED_FILE).unlink(missing_ok=True)
    key = runtime.machine_description(CPU, 1)
    assert key.endswith(runtime.SESSION_SETTINGS)
    old = key.removesuffix(f", {runtime.SESSION_SETTINGS}")  # what the old settings recorded
    assert runtime.record_speed(model_dir, old, runtime.Speed(9999.0, old))
    assert runtime.recorded_speed(model_dir, key) is None, "timed again under the settings served now"
    fresh = runtime.speed_here(model_dir, [CPU], threads=1)
    assert fresh.ms != 9999.0 and fresh.machine == key


def test_a_served_run_gives_what_a_default_session_gives(tiny_repository):
    """The settings change memory behaviour, not results."""
    import onnxruntime as ort

    onnx = tiny_repository / "depth_anything_v2_small_252" / "1" / "model.onnx"
    served, _ = runtime.open_session(onnx, [CPU], 1)
    plain = ort.InferenceSession(str(onnx), providers=[CPU])
    for height, width in ((48, 64), (31, 97), (48, 64)):
        batch = np.random.default_rng(height).integers(0, 255, (1, height, width, 3), dtype=np.uint8)
        expected = plain.run(["DEPTH"], {"IMAGE": batch})[0]
        np.testing.assert_allclose(runtime.infer(served, batch), expected, rtol=1e-5, atol=1e-6)
