"""Integration: a real tritonserver (nvidia-pytriton's binary) serving both tiny models."""

from __future__ import annotations

import socket

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client import __main__ as direct_client
from depthstream.contract import CHECKPOINTS, contract_violations
from serving.triton import EmbeddedTriton, TritonStartError
from tests.helpers import TINY_SERVED, photo
from tests.servers import triton_settings


@pytest.fixture(scope="module")
def grpc(triton):
    client = grpcclient.InferenceServerClient(triton.settings.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(triton):
    client = httpclient.InferenceServerClient(triton.settings.http_url.removeprefix("http://"))
    yield client
    client.close()


def onnxruntime_depth(repository, name: str, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"))
    return session.run(["DEPTH"], {"IMAGE": batch})[0]


def grpc_infer(client, name: str, batch: np.ndarray, datatype: str = "UINT8") -> np.ndarray:
    tensor = grpcclient.InferInput("IMAGE", list(batch.shape), datatype)
    tensor.set_data_from_numpy(batch)
    return client.infer(name, [tensor]).as_numpy("DEPTH")


@pytest.mark.parametrize("name", sorted(TINY_SERVED))
def test_served_metadata_matches_contract(grpc, name):
    meta = grpc.get_model_metadata(name)
    tensors = [[(t.name, t.datatype, tuple(t.shape)) for t in group] for group in (meta.inputs, meta.outputs)]
    assert contract_violations(name, *tensors) == []


@pytest.mark.parametrize("name", list(CHECKPOINTS) + ["depth_anything_v2_small_252_int8"])
@pytest.mark.parametrize("width,height", [(640, 480), (357, 501)])
def test_grpc_depth_equals_onnxruntime(grpc, tiny_repository, name, width, height):
    batch = photo(width, height, "chelsea")[None]
    depth = grpc_infer(grpc, name, batch)
    assert depth.shape == (1, height, width) and depth.dtype == np.float32
    expected = onnxruntime_depth(tiny_repository, name, batch)
    # whichever runtime serves it here (ONNX Runtime or OpenVINO): within 1e-4 of the range
    assert np.abs(depth - expected).max() <= 1e-4 * np.ptp(expected)


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_http_batch_of_two_equals_onnxruntime(http, tiny_repository, name):
    batch = np.stack([photo(320, 240, "astronaut"), photo(320, 240, "coffee")])
    tensor = httpclient.InferInput("IMAGE", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=True)
    depth = http.infer(name, [tensor]).as_numpy("DEPTH")
    assert depth.shape == (2, 240, 320)
    expected = onnxruntime_depth(tiny_repository, name, batch)
    # whichever runtime serves it here (ONNX Runtime or OpenVINO): within 1e-4 of the range
    assert np.abs(depth - expected).max() <= 1e-4 * np.ptp(expected)


@pytest.mark.parametrize(
    "batch,datatype,message",
    [
        (np.zeros((1, 8, 8, 3), np.float32), "FP32", "expects 'UINT8'"),
        (np.zeros((1, 8, 8, 4), np.uint8), "UINT8", "unexpected shape"),
        (np.zeros((1, 0, 8, 3), np.uint8), "UINT8", "non-empty"),
    ],
)
def test_bad_request_gets_tritons_error_and_server_goes_on(grpc, batch, datatype, message):
    with pytest.raises(InferenceServerException, match=message):
        grpc_infer(grpc, "depth_anything_v2_small", batch, datatype)
    good = photo(64, 48)[None]
    assert grpc_infer(grpc, "depth_anything_v2_small", good).shape == (1, 48, 64)


def test_admin_apis_are_restricted(grpc):
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.get_model_repository_index()


def test_direct_client_writes_depth_images_of_input_size(triton, tmp_path, capsys):
    image_path = tmp_path / "photo.jpg"
    cv2.imwrite(str(image_path), cv2.cvtColor(photo(300, 200, "astronaut"), cv2.COLOR_RGB2BGR))
    code = direct_client.main(
        [str(image_path), "--model", "midas_dpt_beit_base_384", "--url", triton.settings.grpc_url]
    )
    assert code == 0
    color = cv2.imread(str(tmp_path / "photo.midas_dpt_beit_base_384.png"))
    raw = cv2.imread(str(tmp_path / "photo.midas_dpt_beit_base_384.depth16.png"), cv2.IMREAD_UNCHANGED)
    assert color.shape == (200, 300, 3) and raw.shape == (200, 300) and raw.dtype == np.uint16
    assert raw.max() == 65535 and raw.min() == 0
    assert "round trip" in capsys.readouterr().out


def test_taken_port_is_named(tiny_repository, tmp_path):
    settings = triton_settings(tiny_repository, tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.grpc_port))
        with pytest.raises(TritonStartError, match=f"port {settings.grpc_port} \\(gRPC\\).*GRPC_PORT"):
            EmbeddedTriton(settings).start()


def test_empty_repository_says_run_make_export(tmp_path):
    with pytest.raises(TritonStartError, match="make export"):
        EmbeddedTriton(triton_settings(tmp_path / "nothing", tmp_path)).start()
