"""``python -m bench.memory_probe MODEL.onnx H W N``: the peak memory of a fresh process running
one request of this shape with the served settings, on the runtime that serves the model here
(ONNX Runtime or OpenVINO: depthstream.engine_choice), in MB (for bench.worst_case).

A process of its own per shape: a long-lived one keeps freed memory in its heap, so its peak
after a large request says little about the next one. Imports only what the served model does.
"""

import os
import sys
from pathlib import Path

import numpy as np

from depthstream import engine_choice
from depthstream.runtime import infer, open_session


def peak_mb(onnx_path: str, height: int, width: int, batch: int) -> float:
    model_dir = Path(onnx_path).parent.parent
    runner = engine_choice.for_model(model_dir, ["CPUExecutionProvider"]).runner  # as served, on the host
    session, _ = open_session(onnx_path, ["CPUExecutionProvider"], os.cpu_count() or 1, runner=runner)
    image = np.zeros((1, height, width, 3), np.uint8)
    for _ in range(batch):  # as the served model runs a batch: one image at a time
        infer(session, image)
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a large process (make bench,
    # with PyTorch loaded) would report its parent's size
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    print(peak_mb(sys.argv[1], *(int(v) for v in sys.argv[2:5])))
