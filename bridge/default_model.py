"""Which model a stream starts on: the most accurate one this machine runs live.

"Live" is at least ``LIVE_FPS`` answered frames per second end to end, estimated from the
model's own time per 640x480 frame as measured on the machine that serves it (recorded with
the model, passed to Triton's config by ``serving.repository``; followed on live traffic,
bridge/observed.py) plus the stack's own time per frame, measured rather than assumed: the
bridge's decode, colorize and encode timed on this machine at start, then what recent frames
spent outside the model (transport, Triton's backend, the bridge's work). A constant factor
would not do: the stack's time stays while the model's shrinks (3-4x on a BF16 matrix engine),
so its share grows. Before any frame, the estimate counts the bridge's own work only, a lower
bound. ``BRIDGE_DEFAULT_MODEL`` set to a model name wins over all of this.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.catalog import ModelInfo
from depthstream.contract import DEFAULT_MODEL, DepthKind, accuracy_rank, spec_of

AUTO = "auto"
LIVE_FPS = 5.0


def estimated_fps(ms_per_frame: float | None, stack_ms: float) -> float | None:
    """Frames per second end to end, from the model's own time per frame and the stack's."""
    if not ms_per_frame:
        return None
    return 1000.0 / (ms_per_frame + stack_ms)


@dataclass(frozen=True)
class DefaultChoice:
    model: str
    reason: str


def choose_default(models: list[ModelInfo], configured: str = AUTO, stack_ms: float = 0.0) -> DefaultChoice:
    if configured != AUTO:
        return DefaultChoice(configured, f"{configured}: set by BRIDGE_DEFAULT_MODEL / --default-model.")
    # a metric model answers another question (how far, in metres): chosen by the user, never here
    relative = [info for info in models if info.ready and spec_of(info.name).depth is DepthKind.RELATIVE]
    ready = sorted(relative, key=lambda info: accuracy_rank(spec_of(info.name)))
    if not ready:
        return DefaultChoice(DEFAULT_MODEL, f"{DEFAULT_MODEL}: the reference model (none is ready yet).")
    timed = [info for info in ready if info.ms_per_frame]
    if not timed:
        name = ready[0].name
        return DefaultChoice(
            name, f"{name}: the most accurate model served; the server recorded no speeds to judge from."
        )
    live = [info for info in timed if (estimated_fps(info.ms_per_frame, stack_ms) or 0.0) >= LIVE_FPS]
    if live:
        best = live[0]
        return DefaultChoice(
            best.name,
            f"{best.name}: the most accurate model that runs live here "
            f"(~{estimated_fps(best.ms_per_frame, stack_ms) or 0.0:.1f} frames/s end to end; live is >= {LIVE_FPS:.0f})"
            f"{_observed_note(timed)}.",
        )
    fastest = min(timed, key=lambda info: info.ms_per_frame or float("inf"))  # all timed
    return DefaultChoice(
        fastest.name,
        f"{fastest.name}: no model runs live here (>= {LIVE_FPS:.0f} frames/s); this is the fastest "
        f"(~{estimated_fps(fastest.ms_per_frame, stack_ms) or 0.0:.1f} frames/s){_observed_note(timed)}.",
    )


def _observed_note(models: list[ModelInfo]) -> str:
    """Which speeds follow live traffic instead of the record, said with the choice."""
    followed = [info for info in models if info.recorded_ms is not None]
    if not followed:
        return ""
    times = ", ".join(
        f"{info.name} {info.ms_per_frame:.0f} ms a frame (recorded {info.recorded_ms:.0f})"
        for info in followed
    )
    return f"; speeds as observed on live traffic now: {times}"
