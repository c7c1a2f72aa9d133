"""Each model's time per frame as the bridge sees it on live traffic.

The page's "~N fps" labels and the default model come from a time recorded once, on a machine
that may be busier now (a browser, a build, other streams' CPU work beside Triton). When the
recent median of what the bridge really waits per inference differs from the recorded figure by
more than ``DEVIATION``, the estimates follow what is observed, and say so; with no recent
traffic, or traffic at the recorded speed, they are the recorded figure again.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bridge.triton keeps one of these per endpoint
    from bridge.triton import ModelInfo

WINDOW_S = 30.0  # only this recent traffic counts: the estimate comes back when the load goes
KEEP = 15  # samples per model at most
MIN_SAMPLES = 5
DEVIATION = 0.3


class ObservedTimes:
    def __init__(self) -> None:
        self._samples: defaultdict[str, deque[tuple[float, float]]] = defaultdict(lambda: deque(maxlen=KEEP))

    def add(self, model: str, seconds: float) -> None:
        self._samples[model].append((time.monotonic(), seconds))

    def median_ms(self, model: str) -> float | None:
        """The median of this model's recent inferences, or None with too few of them."""
        since = time.monotonic() - WINDOW_S
        recent = [seconds for at, seconds in self._samples.get(model, ()) if at >= since]
        return statistics.median(recent) * 1e3 if len(recent) >= MIN_SAMPLES else None

    def follow(self, info: ModelInfo) -> ModelInfo:
        """``info`` with ``ms_per_frame`` as observed where it differs from the record by more
        than ``DEVIATION`` (the record kept in ``recorded_ms``)."""
        observed = self.median_ms(info.name)
        recorded = info.ms_per_frame
        if observed is None or not recorded or abs(observed - recorded) <= DEVIATION * recorded:
            return info
        return dataclasses.replace(info, ms_per_frame=round(observed, 1), recorded_ms=recorded)
