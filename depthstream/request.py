"""One inference request in the contract's tensors, for every gRPC caller (the bridge, the
client, the benchmarks): ``client.infer(model, **depth_request(batch), ...)``.

tritonclient's sync and aio clients share these classes. Imported only where tritonclient is
installed (not by the export, nor by the Python-backend model).
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from depthstream.contract import INPUT_DTYPE, INPUT_NAME, INTRINSICS_NAME, OUTPUT_NAME

# Triton restricts its shared-memory protocol behind a key of this name (serving.triton); a
# client sends it in this gRPC header
SHM_KEY_NAME = "shm-key"
SHM_KEY_HEADER = f"triton-grpc-protocol-{SHM_KEY_NAME}"
# ... and its model-repository protocol (the repository's index) behind its admin key
ADMIN_KEY_NAME = "admin-key"
ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_NAME}"


def shared_layout(batch_shape: tuple[int, ...]) -> tuple[int, int]:
    """(bytes of the RGB batch, bytes of its FP32 depth) in a shared-memory region: the RGB at
    offset 0, the depth right after it."""
    n, height, width = batch_shape[:3]
    return n * height * width * 3, n * height * width * 4


def depth_request(
    batch: np.ndarray, shared_memory: str | None = None, intrinsics: bool = False
) -> dict[str, list]:
    """uint8 RGB ``[N, H, W, 3]`` -> the ``inputs`` and ``outputs`` of one request for depth
    (and ``intrinsics``: the camera, from a model that estimates it; 36 bytes an image, always
    in the message).

    With ``shared_memory`` (a registered region's name) the RGB and the depth go through that
    region instead of the message, laid out as ``shared_layout`` says; the caller has written
    the batch there."""
    tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), INPUT_DTYPE)
    output = grpcclient.InferRequestedOutput(OUTPUT_NAME)
    if shared_memory is None:
        tensor.set_data_from_numpy(np.ascontiguousarray(batch))
    else:
        rgb_bytes, depth_bytes = shared_layout(batch.shape)
        tensor.set_shared_memory(shared_memory, rgb_bytes)
        output.set_shared_memory(shared_memory, depth_bytes, offset=rgb_bytes)
    outputs = [output]
    if intrinsics:
        outputs.append(grpcclient.InferRequestedOutput(INTRINSICS_NAME))
    return {"inputs": [tensor], "outputs": outputs}
