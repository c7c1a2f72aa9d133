"""What `make export` prints: one progress line per model, then one summary table.

Third-party libraries (ONNX Runtime's quantizer logs every tensor through the root logger,
PyTorch's tracer warns) stay quiet unless ``--verbose``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from typing import TextIO


def quiet_third_parties(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbose:
        return
    for own in ("export", "depthstream"):  # our warnings stay; the libraries' chatter goes
        logging.getLogger(own).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # ONNX Runtime's own C++ log: errors only
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" for every model...
    enable_progress_bars()  # ...but a checkpoint download, a long step, keeps its bar


@dataclass(frozen=True)
class Row:
    model: str
    network_input: str  # e.g. "518 (sides <= 1288)"
    parity: str  # e.g. "2.3e-05 vs PyTorch", "1.8e-02 vs FP32"
    ms_here: float | None  # median ms per 640x480 frame on this machine, as served
    twin: str  # "-" for FP32; "kept: ..." / "dropped: ..." for a twin (INT8, BF16)
    random_weights: bool
    status: str  # "exported", "up to date", "not written"
    runtime: str = "-"  # what serves it here: "ONNX Runtime", "OpenVINO"


HEADERS = ("model", "network input", "parity error", "ms/frame here", "runtime", "twin", "status", "weights")


def cells(row: Row) -> tuple[str, ...]:
    ms = "-" if row.ms_here is None else f"{row.ms_here:.0f}"
    weights = "RANDOM" if row.random_weights else "checkpoint"
    return (row.model, row.network_input, row.parity, ms, row.runtime, row.twin, row.status, weights)


def render(rows: list[Row]) -> str:
    table = [HEADERS, *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


class Progress:
    """One line per model: rewritten in place on a terminal, printed once when done otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stdout  # the one at call time (a test may have replaced it)
        self.live = self.stream.isatty()

    def step(self, model: str, what: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[K  [{self.done + 1}/{self.total}] {model}: {what}")
            self.stream.flush()

    def finish(self, model: str, what: str) -> None:
        self.done += 1
        prefix = "\r\033[K" if self.live else ""
        self.stream.write(f"{prefix}  [{self.done}/{self.total}] {model}: {what}\n")
        self.stream.flush()
