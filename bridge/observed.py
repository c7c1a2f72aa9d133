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

from bridge.catalog import ModelInfo

WINDOW_S = 30.0  # only this recent traffic counts: the estimate comes back when the load goes
KEEP = 15  # samples per model at most
MIN_SAMPLES = 5
DEVIATION = 0.3


STACK = "(the stack)"  # the key of the stack's own time among the models' samples
EXPECTED_TIME_WEIGHT = 0.2  # of the newest answer in a model's running mean time


class ObservedTimes:
    """One endpoint's two estimates of each model's inference time, from the same answers: a
    running mean that reacts at once (``expected_s``: the deadlines: is a frame's turn still
    worth taking?), and a recent median that ignores a spike (``median_ms``: the page's labels
    and the default model)."""

    def __init__(self) -> None:
        self._samples: defaultdict[str, deque[tuple[float, float]]] = defaultdict(lambda: deque(maxlen=KEEP))
        self._transport_ms: dict[str, float] = {}  # per model: its inference wait over its record
        self._expected_s: dict[str, float] = {}

    def add(self, model: str, seconds: float) -> None:
        self._samples[model].append((time.monotonic(), seconds))
        if model != STACK:
            old = self._expected_s.get(model)
            self._expected_s[model] = seconds if old is None else old + EXPECTED_TIME_WEIGHT * (seconds - old)

    def expected_s(self, model: str) -> float:
        """The running mean of ``model``'s inferences here (0 until one has been answered)."""
        return self._expected_s.get(model, 0.0)

    def add_stack(self, seconds: float) -> None:
        """One answered frame's time in the bridge outside its wait for the model."""
        self.add(STACK, max(seconds, 0.0))

    def median_ms(self, model: str) -> float | None:
        """The median of this model's recent inferences, or None with too few of them."""
        since = time.monotonic() - WINDOW_S
        recent = [seconds for at, seconds in self._samples.get(model, ()) if at >= since]
        return statistics.median(recent) * 1e3 if len(recent) >= MIN_SAMPLES else None

    def stack_ms(self) -> float:
        """What a frame costs the stack besides the model: the bridge's own work as timed here
        at start (bridge.own_work); once frames have run, what they spent in the bridge outside
        the model's inference, plus how much longer an inference waited than the model's own
        recorded time (gRPC or shared memory, Triton's backend)."""
        from bridge.own_work import own_work_ms

        outside = self.median_ms(STACK)
        if outside is None:
            return own_work_ms()
        transport = statistics.median(self._transport_ms.values()) if self._transport_ms else 0.0
        return round(outside + transport, 1)

    def follow(self, info: ModelInfo) -> ModelInfo:
        """``info`` with ``ms_per_frame`` as observed where it differs from the record by more
        than ``DEVIATION`` (the record kept in ``recorded_ms``)."""
        observed = self.median_ms(info.name)
        recorded = info.ms_per_frame
        if observed is None or not recorded or abs(observed - recorded) <= DEVIATION * recorded:
            if observed is not None and recorded:  # at its recorded speed: the rest is transport
                self._transport_ms[info.name] = max(observed - recorded, 0.0)
            return info
        self._transport_ms.pop(info.name, None)  # slower itself: all of it counts as the model's
        return dataclasses.replace(info, ms_per_frame=round(observed, 1), recorded_ms=recorded)
