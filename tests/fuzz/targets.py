"""Every parser a stranger's bytes reach, as a fuzz target (``make fuzz``, tests/fuzz/__main__.py).

Each target takes the fuzzer's bytes and lets through only the exceptions its callers expect
(a ProtocolError becomes the client's error message, a SettingsError the start-up's line, a
config that does not parse is reported as such); any other exception is a crash: the fuzzer
stops, keeps the input, and the input becomes a regression test (tests/fuzz/crashes/).

- ``control``: a WebSocket text message (bridge.protocol.parse_control);
- ``image``: a WebSocket binary message, the frame (bridge.images.decode: the header guards,
  JPEG, PNG and WebP);
- ``websocket``: the bytes after the handshake (the frame headers, masks, lengths, fragments,
  the size limit the bridge sets), through the websockets library's parser to the two above;
- ``settings``: flags and environment variables of each process (depthstream.settings);
- ``catalog``: a config.pbtxt in the repository, as the bridge and the export read it;
- ``backend``: what a direct gRPC request hands the Python-backend model once Triton has taken
  it (serving/python_backend_model.py, in-process with a stand-in for triton_python_backend_utils).
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SMALL_IMAGE_PIXELS = 256 * 256  # the guards are the same at any limit; smaller runs faster


@dataclass
class Target:
    run: Callable[[bytes], None]
    setup: Callable[[], None] = field(default=lambda: None)


def control(data: bytes) -> None:
    from bridge.protocol import ProtocolError, parse_control

    with contextlib.suppress(ProtocolError):
        parse_control(data.decode("utf-8", "replace"))  # a text frame is valid UTF-8


def image(data: bytes) -> None:
    from bridge.images import decode
    from bridge.protocol import ProtocolError

    try:
        rgb = decode(data, SMALL_IMAGE_PIXELS)
    except ProtocolError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
    assert rgb.shape[0] * rgb.shape[1] <= SMALL_IMAGE_PIXELS, rgb.shape


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def websocket(data: bytes) -> None:
    """The bytes a client sends after its handshake, parsed as the bridge's server parses them
    (its message size limit), each message to the handler of its kind."""
    from websockets.frames import Opcode
    from websockets.server import ServerProtocol

    from bridge.settings import BridgeSettings

    server = ServerProtocol(max_size=BridgeSettings().max_message_bytes)
    server.receive_data(HANDSHAKE)
    (request,) = server.events_received()
    server.send_response(server.accept(request))
    server.receive_data(data)
    for event in server.events_received():
        if event.opcode == Opcode.TEXT:
            control(event.data)
        elif event.opcode == Opcode.BINARY:
            image(event.data)


def settings(data: bytes) -> None:
    """Flags, then after a 0x01 byte ``NAME=value`` lines, for the bridge and the export."""
    from bridge.settings import BridgeSettings
    from depthstream.settings import SettingsError, parse
    from export.settings import ExportSettings

    text = data.decode("utf-8", "replace")
    flags, _, variables = text.partition("\x01")
    environ = dict(line.partition("=")[::2] for line in variables.splitlines() if "=" in line)
    kind = BridgeSettings if len(data) % 2 == 0 else ExportSettings
    with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SettingsError, SystemExit):
        parse(kind, [flag for flag in flags.split("\0") if flag], environ)  # argparse: SystemExit(2)


def catalog(data: bytes) -> None:
    """A config.pbtxt: parsed as Triton parses it, judged as the bridge judges a served model
    (its spec, its tensors, the camera), and its speed, weights and capacity read."""
    from google.protobuf import text_format

    from bridge.triton import capacity_of, judge_served
    from depthstream import model_config

    try:
        config = model_config.parse(data.decode("utf-8", "replace"))
        tensors = list(model_config.tensors(config))  # Triton refuses a config it cannot read
    except (text_format.ParseError, ValueError):
        return
    spec, problems = judge_served(config.name or "fuzzed", tensors, config)
    assert spec is not None or problems
    model_config.served_speed(config)
    model_config.is_random_weights(config)
    assert capacity_of(config) >= 1


BACKEND_LIMITS = {"max_image_pixels": "4096", "max_image_side": "128", "min_image_side": "2"}
DTYPES = (np.uint8, np.float32, np.int16, np.float64, np.bool_, np.int64)
_backend: list = []  # the model, set up once per process


def backend_setup() -> None:
    """A tiny contract-following ONNX model (the mean of the channels as DEPTH) served by the
    real Python-backend model file, its Triton utilities stood in."""
    import json

    if _backend:
        return
    import onnx
    from onnx import TensorProto, helper

    from tests.fuzz import stand_in_pb_utils

    sys.modules["triton_python_backend_utils"] = stand_in_pb_utils
    from serving import python_backend_model

    directory = Path(tempfile.mkdtemp(prefix="fuzz-backend-"))
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["IMAGE"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels"], ["DEPTH"], axes=[3], keepdims=0),
        ],
        "mean",
        [helper.make_tensor_value_info("IMAGE", TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("DEPTH", TensorProto.FLOAT, ["N", "H", "W"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), directory / "model.onnx")
    parameters = {**BACKEND_LIMITS, "onnx_path": str(directory / "model.onnx"), "intra_op_threads": "1"}
    config = {
        "input": [{"name": "IMAGE", "data_type": "TYPE_UINT8"}],
        "output": [{"name": "DEPTH", "data_type": "TYPE_FP32"}],
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
    }
    model = python_backend_model.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_name": "fuzzed"})
    _backend.append(model)


def backend(data: bytes) -> None:
    """A request as Triton may hand it over: any dtype, rank and sizes (Triton checks them
    against the config first; the model checks again), cancelled or not."""
    from tests.fuzz import stand_in_pb_utils as pb_utils

    if len(data) < 4:
        return
    dtype = DTYPES[data[0] % len(DTYPES)]
    rank = data[1] % 6
    shape = tuple(int(b) % 70 for b in data[2 : 2 + rank])
    cancelled = data[-1] == 0xFF
    values = np.frombuffer(data[2 + rank :], np.uint8)
    count = int(np.prod(shape)) if shape else 1
    if count > 4 * 128 * 128 * 3:
        return
    array = np.resize(values, count).astype(dtype).reshape(shape) if count else np.zeros(shape, dtype)
    request = pb_utils.Request([pb_utils.Tensor("IMAGE", array)], cancelled)
    (response,) = _backend[0].execute([request])
    assert isinstance(response, pb_utils.InferenceResponse)
    if response.error is None:
        (depth,) = response.output_tensors
        assert depth.name == "DEPTH" and depth.array.shape == array.shape[:3], (
            array.shape,
            depth.array.shape,
        )


TARGETS: dict[str, Target] = {
    "control": Target(control),
    "image": Target(image),
    "websocket": Target(websocket),
    "settings": Target(settings),
    "catalog": Target(catalog),
    "backend": Target(backend, backend_setup),
}
