"""Every config.pbtxt parses with Triton's own protobuf and conforms to the model contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from depthstream import model_config
from depthstream.contract import MODELS
from export import configs
from serving.repository import EmptyRepositoryError, generate
from tests.helpers import TINY_SERVED, check_common, violations

INVALID = Path(__file__).parent / "configs"
EXPECTED_PROBLEM = {
    "wrong_dtype.pbtxt": "'FP32'",
    "wrong_tensor_name.pbtxt": "'pixel_values'",
    "no_batch_dim.pbtxt": "inputs are [('IMAGE', 'UINT8', (-1, -1, 3))]",
    "channels_first.pbtxt": "(-1, 3, -1, -1)",
    "unknown_model.pbtxt": "is not a model name",
}


@pytest.mark.parametrize("name", sorted(TINY_SERVED))
def test_production_config_conforms(tiny_repository, name):
    config = model_config.parse((tiny_repository / name / "config.pbtxt").read_text())
    check_common(config, name)
    assert config.backend == "onnxruntime"
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert not model_config.is_random_weights(config)


@pytest.mark.parametrize("name", sorted(TINY_SERVED))
def test_embedded_config_conforms(tiny_repository, tmp_path, name):
    generate(tiny_repository, tmp_path)
    config = model_config.parse((tmp_path / name / "config.pbtxt").read_text())
    check_common(config, name, batching=False)  # measured slower on CPU: see embedded_config
    assert config.backend == "python"
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert not config.HasField("optimization")
    assert (
        Path(config.parameters["onnx_path"].string_value)
        == (tiny_repository / name / "1" / "model.onnx").resolve()
    )
    assert (tmp_path / name / "1" / "model.py").is_file()


def test_embedded_config_can_keep_the_production_batcher(tiny_repository, tmp_path):
    generate(tiny_repository, tmp_path, dynamic_batching=True)
    config = model_config.parse((tmp_path / "depth_anything_v2_small" / "config.pbtxt").read_text())
    check_common(config, "depth_anything_v2_small", batching=True)


@pytest.mark.parametrize("name", sorted(TINY_SERVED))
def test_tensorrt_plan_config_conforms(name):
    config = model_config.parse(
        configs.to_text(configs.tensorrt_plan_config(MODELS[name], random_weights=True))
    )
    check_common(config, name)
    assert config.platform == "tensorrt_plan" and model_config.is_random_weights(config)


@pytest.mark.parametrize("fixture", sorted(EXPECTED_PROBLEM))
def test_invalid_config_is_reported(fixture):
    config = model_config.parse((INVALID / fixture).read_text())
    problems = violations(config)
    assert problems and EXPECTED_PROBLEM[fixture] in " ".join(problems)


def test_generate_refuses_empty_repository(tmp_path):
    with pytest.raises(EmptyRepositoryError, match="make export"):
        generate(tmp_path / "empty", tmp_path / "out")
