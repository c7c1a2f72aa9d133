"""A model's floating-point work a frame, counted once at export and kept in its manifest.

torch's FLOP counter (``torch.utils.flop_counter``) counts the matrix work of one forward pass
(matrix multiplies, convolutions, attention: two FLOPs a multiply-add), not the element-wise
ops, which are memory-bound anyway. It runs the whole fused graph on a 640x480 frame, so the
resize in and out (weight matrices for the bicubic and area resizes) count with the network:
the work an engine does for one frame of the page. The bench divides it by an engine's time to
show how far that engine runs from the machine's measured matrix-multiply ceiling (bench.limit).
"""

from __future__ import annotations

import numpy as np
import torch

FRAME = (480, 640)  # height, width: the page's frame, the size every speed figure is taken at


def count_gflops(fused: torch.nn.Module, frame: np.ndarray) -> float:
    """GFLOPs of one forward pass of ``fused`` on one RGB uint8 ``frame`` [H, W, 3]."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fused(torch.from_numpy(np.ascontiguousarray(frame)[None]))
    return counter.get_total_flops() / 1e9
