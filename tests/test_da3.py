"""Depth Anything 3: its input processor's rule, the exported graph against the package's own
network and processing, and the camera (INTRINSICS) in the input's pixels."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from depthstream import model_config
from depthstream.contract import (
    DEPTH_ANYTHING_3_SMALL,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTRINSICS_NAME,
    DepthKind,
    contract_violations,
    expected_tensors,
)
from export import da3
from export.__main__ import main as export_main
from export.checkpoints import CheckpointError
from export.resize import area_or_cubic
from tests.helpers import photo
from tests.test_any_checkpoint import MAX_ERROR, MIN_CORRELATION, SIZES, parity
from tests.tiny_da3 import save_tiny

SPEC = DEPTH_ANYTHING_3_SMALL
PATCH = 14
MAX_INTRINSICS_ERROR = 1e-3  # relative, the bound


def processor_input(rgb: np.ndarray, size: int = 504) -> np.ndarray:
    """The package's InputProcessor (utils/io/input_processor.py, upper_bound_resize), written out
    with cv2 and numpy (it imports torchvision): the long side to ``size``, then each side to its
    nearest multiple of 14, INTER_CUBIC enlarging and INTER_AREA shrinking, uint8 between, then
    ImageNet normalization. [1, 1, 3, h, w] float32."""
    height, width = rgb.shape[:2]
    scale = size / max(width, height)
    image = rgb
    new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    if max(width, height) != size:
        image = cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        )

    def nearest(x: int) -> int:
        down = x // PATCH * PATCH
        return down + PATCH if abs(down + PATCH - x) <= abs(x - down) else down

    final_w, final_h = max(1, nearest(new_w)), max(1, nearest(new_h))
    if (final_w, final_h) != (new_w, new_h):
        grows = final_w > new_w or final_h > new_h
        image = cv2.resize(
            image, (final_w, final_h), interpolation=cv2.INTER_CUBIC if grows else cv2.INTER_AREA
        )
    normalized = (image.astype(np.float32) / 255 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return normalized.transpose(2, 0, 1)[None, None]


def package_forward(network, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The package's own forward (DepthAnything3Net) on the processor's input: depth resized
    back to the image (the contract's bilinear) and intrinsics scaled to the image's pixels."""
    height, width = rgb.shape[:2]
    pixels = torch.from_numpy(processor_input(rgb))
    with torch.no_grad():
        out = network(pixels)
    depth = F.interpolate(out.depth, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    intrinsics = out.intrinsics[0, 0].numpy().astype(np.float64)
    intrinsics[0] *= width / pixels.shape[-1]
    intrinsics[1] *= height / pixels.shape[-2]
    return depth.numpy(), intrinsics


@pytest.mark.parametrize(
    "height, width", [(480, 640), (640, 480), (1080, 1920), (2, 1920), (100, 100), (377, 504), (7, 5)]
)
def test_network_size_is_the_input_processors(height, width):
    rgb = np.zeros((height, width, 3), np.uint8)
    want = processor_input(rgb).shape[-2:]
    assert SPEC.resize.network_size(height, width) == (max(PATCH, want[0]), max(PATCH, want[1]))
    fused = da3.FusedDepthAnything3(torch.nn.Identity(), SPEC)
    got = fused.network_size(torch.from_numpy(rgb[None]))
    assert (int(got[0]), int(got[1])) == SPEC.resize.network_size(height, width)


@pytest.mark.parametrize("size", [(378, 504), (336, 224), (504, 504), (14, 504)])
def test_the_resize_is_opencvs(size):
    """INTER_AREA shrinking and INTER_CUBIC enlarging, within one level on a few pixels."""
    rgb = photo(640, 480) if size[0] <= 480 else photo(200, 150)
    height, width = size
    enlarge = height > rgb.shape[0]
    flag = cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA
    want = cv2.resize(rgb, (width, height), interpolation=flag).astype(np.float32)
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float32)
    got = area_or_cubic(pixels, height, width, torch.tensor(enlarge))[0].permute(1, 2, 0).numpy()
    difference = np.abs(got - want)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


@pytest.fixture(scope="module")
def tiny_da3(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("da3") / "checkpoint")


@pytest.fixture(scope="module")
def da3_repository(tiny_da3, tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("da3-repo")
    args = ["--model", SPEC.name, "--weights", str(tiny_da3), "--output", str(repository), "--int8", "never"]
    assert export_main(args) == 0
    return repository


@pytest.mark.parametrize("width, height", SIZES)
def test_served_graph_matches_the_package(da3_repository, tiny_da3, width, height):
    """The exported ONNX against the package's processing and forward, on a photograph: the
    issue's bounds, at three sizes including a portrait and a 2.3:1 strip."""
    network = da3.build_network(da3.architecture_of(tiny_da3))
    da3.load_weights(network, tiny_da3 / da3.WEIGHTS_FILE)
    rgb = photo(width, height)
    want_depth, want_camera = package_forward(network.eval(), rgb)
    session = ort.InferenceSession(str(da3_repository / SPEC.name / "1" / "model.onnx"))
    depth, camera = session.run(["DEPTH", INTRINSICS_NAME], {"IMAGE": rgb[None]})
    correlation, error = parity(depth[0], want_depth)
    assert correlation >= MIN_CORRELATION and error <= MAX_ERROR, (correlation, error)
    assert camera.shape == (1, 3, 3)
    relative = np.abs(camera[0] - want_camera).max() / np.abs(want_camera).max()
    assert relative <= MAX_INTRINSICS_ERROR, (camera[0], want_camera)
    # in the input's pixels: the principal point at the image's centre
    assert camera[0, 0, 2] == pytest.approx(width / 2) and camera[0, 1, 2] == pytest.approx(height / 2)


def test_served_config_declares_the_camera(da3_repository):
    config = model_config.parse((da3_repository / SPEC.name / "config.pbtxt").read_text())
    inputs, outputs = model_config.tensors(config)
    assert (inputs, outputs) == expected_tensors(intrinsics=True)
    assert contract_violations(config.name, inputs, outputs) == []
    assert config.parameters["intrinsics"].string_value == "true"
    spec = model_config.spec_of(config)
    assert spec.intrinsics and spec.depth is DepthKind.SCALED
    assert spec.depth_meaning == {"kind": "scaled", "units": "scale", "larger": "farther"}


def test_a_model_without_the_camera_keeps_its_contract():
    inputs, outputs = expected_tensors()
    assert contract_violations("m", inputs, outputs) == []
    assert [name for name, _, _ in outputs] == ["DEPTH"]
    wrong = [*outputs, (INTRINSICS_NAME, "FP32", (-1, 4, 4))]
    assert contract_violations("m", inputs, wrong)


def test_weights_of_another_network_are_refused(tiny_da3, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / da3.CONFIG_JSON).write_text((tiny_da3 / da3.CONFIG_JSON).read_text())
    (other / da3.ARCHITECTURE_FILE).write_text(
        (tiny_da3 / da3.ARCHITECTURE_FILE)
        .read_text()
        .replace("embed_dim: 32", "embed_dim: 48")
        .replace("dim_in: 64", "dim_in: 96")
    )
    (other / da3.WEIGHTS_FILE).write_bytes((tiny_da3 / da3.WEIGHTS_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="does not fit the network"):
        da3.load_checkpoint(SPEC, other, random_weights=False)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        da3.load_checkpoint(SPEC, tmp_path, random_weights=False)


def test_random_weights_give_a_plausible_camera():
    """WEIGHTS=random: the full-size network's camera head says 40-100 degrees, never 0 or
    infinite (its fields of view end in ReLU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = da3.random_network(da3.package_config(da3.PRESET))
    fused = da3.FusedDepthAnything3(da3.make_exportable(network), SPEC).eval()
    for width, height in ((320, 240), (240, 320)):
        with torch.no_grad():
            depth, camera = fused(torch.from_numpy(photo(width, height)[None]))
        fx = float(camera[0, 0, 0])
        hfov = math.degrees(2 * math.atan(width / (2 * fx)))
        assert 40 <= hfov <= 100, hfov
        assert torch.isfinite(depth).all() and float(depth.std()) > 0  # depth with structure


# --- served by the embedded Triton: direct gRPC and the example client -------------------------
def test_direct_grpc_gets_intrinsics_beside_depth_and_the_client_uses_them(
    triton, tiny_repository, tmp_path, capsys
):
    """A direct gRPC client asks for INTRINSICS like DEPTH: the served values are ONNX Runtime's
    on the same graph; the example client prints them and its --ply uses them (--hfov pins)."""
    import json

    import tritonclient.grpc as grpcclient

    from client import __main__ as direct_client
    from depthstream.request import depth_request

    name = "depth_anything_3_small_252"
    rgb = photo(320, 240)
    with grpcclient.InferenceServerClient(triton.settings.grpc_url) as client:
        result = client.infer(name, **depth_request(rgb[None], intrinsics=True))
        depth, camera = result.as_numpy("DEPTH"), result.as_numpy(INTRINSICS_NAME)
        metadata = client.get_model_metadata(name)
    assert [o.name for o in metadata.outputs] == ["DEPTH", INTRINSICS_NAME]
    session = ort.InferenceSession(str(tiny_repository / name / "1" / "model.onnx"))
    want_depth, want_camera = session.run(["DEPTH", INTRINSICS_NAME], {"IMAGE": rgb[None]})
    np.testing.assert_allclose(camera, want_camera, rtol=1e-5)
    np.testing.assert_allclose(depth, want_depth, rtol=1e-4, atol=1e-5)

    image = tmp_path / "room.png"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    url = triton.settings.grpc_url
    assert direct_client.main([str(image), "--model", name, "--url", url, "--ply", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert f"camera (estimated by {name}): fx {want_camera[0, 0, 0]:.1f}" in printed
    sidecar = json.loads((tmp_path / "a" / f"room.{name}.json").read_text())
    assert sidecar["intrinsics_source"] == "estimated by the model"
    assert sidecar["fx"] == pytest.approx(float(want_camera[0, 0, 0]), rel=1e-5)
    args = [str(image), "--model", name, "--url", url, "--ply", str(tmp_path / "b"), "--hfov", "50"]
    assert direct_client.main(args) == 0
    pinned = json.loads((tmp_path / "b" / f"room.{name}.json").read_text())
    assert pinned["intrinsics_source"] == "stated field of view" and pinned["hfov_deg"] == 50


def test_the_clients_clouds_of_a_video_use_each_frames_own_camera(triton, tmp_path, capsys):
    """A video through a camera model: each frame's PLY JSON holds that frame's INTRINSICS as
    direct gRPC returns them for the same pixels; --hfov pins a value instead."""
    import json

    import tritonclient.grpc as grpcclient

    from client import __main__ as direct_client
    from depthstream.request import depth_request
    from tests.helpers import video_frame, write_video

    name = "depth_anything_3_small_252"
    video = tmp_path / "walk.mp4"
    write_video(video, count=3)
    url = triton.settings.grpc_url
    assert direct_client.main([str(video), "--model", name, "--url", url, "--ply", str(tmp_path / "a")]) == 0
    rgb = video_frame(video, 1)
    with grpcclient.InferenceServerClient(url) as client:
        camera = client.infer(name, **depth_request(rgb[None], intrinsics=True)).as_numpy(INTRINSICS_NAME)[0]
    sidecar = json.loads((tmp_path / "a" / "000001.json").read_text())
    assert sidecar["intrinsics_source"] == "estimated by the model"
    assert sidecar["fx"] == pytest.approx(float(camera[0, 0]), rel=1e-5)
    assert sidecar["cx"] == pytest.approx(float(camera[0, 2]), rel=1e-6)
    args = [str(video), "--model", name, "--url", url, "--ply", str(tmp_path / "b"), "--hfov", "55"]
    assert direct_client.main(args) == 0
    pinned = json.loads((tmp_path / "b" / "000001.json").read_text())
    assert pinned["intrinsics_source"] == "stated field of view" and pinned["hfov_deg"] == 55
