"""One inference request in the contract's tensors, for every gRPC caller (the bridge, the
client, the benchmarks): ``client.infer(model, **depth_request(batch), ...)``.

tritonclient's sync and aio clients share these classes. Imported only where tritonclient is
installed (not by the export, nor by the Python-backend model).
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from depthstream.contract import INPUT_DTYPE, INPUT_NAME, OUTPUT_NAME


def depth_request(batch: np.ndarray) -> dict[str, list]:
    """uint8 RGB ``[N, H, W, 3]`` -> the ``inputs`` and ``outputs`` of one request for depth."""
    tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), INPUT_DTYPE)
    tensor.set_data_from_numpy(np.ascontiguousarray(batch))
    return {"inputs": [tensor], "outputs": [grpcclient.InferRequestedOutput(OUTPUT_NAME)]}
