"""The WebSocket wire protocol (documented in docs/protocol.md).

Client -> server
  text:   JSON control, ``{"type": "config", "model": "...", "colormap": "...", "output": "...",
          "steady": true|false, "new_scene": true}``; every field optional; unknown types,
          fields or values are refused with an error message.
  binary: one encoded image (JPEG, PNG or WebP) per message.
Server -> client
  text:   ``{"type": "hello", ...}`` once on connect; ``{"type": "config", ...}`` after each
          accepted control message, with the stream's ``received`` and ``dropped`` counts; for
          every answered frame ``{"type": "depth", "seq": N, "binary": [...], ...}`` immediately
          followed by the binary messages it lists: the colorized depth as JPEG and/or the raw
          depth (``uint16le``, with ``raw.min``/``raw.max``), at the frame's size, or for
          ``points`` the raw depth of every second pixel each way (``raw.step``); its
          ``alignment`` says how a relative depth was aligned to the stream (scale, shift) or
          is null (steady off, metric depth);
          ``{"type": "error", "code": "...", "message": "...", "seq": N?}`` on errors;
          ``{"type": "dropped", "seqs": [[first, last], ...], "reasons": {...}, "dropped": total}``
          for frames that will not be answered (bridge/notices.py). Every frame ends in exactly
          one of: a depth answer, an error with its seq, a dropped notice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.errors import FrameError
from depthstream.contract import DepthKind, known_models
from depthstream.render.colorize import COLORMAPS
from depthstream.wire import (  # the vocabulary, shared with every client; re-exported here
    CLOSE_FOR,
    CONFIG_FIELDS,
    DEFAULT_OUTPUT,
    MODEL_CODES,
    OUTPUTS,
    POINTS_STEP,
    TRANSIENT_CODES,
    CloseCode,
    ErrorCode,
    MessageType,
)

__all__ = [
    "CLOSE_FOR",
    "DEFAULT_OUTPUT",
    "MODEL_CODES",
    "OUTPUTS",
    "POINTS_STEP",
    "TRANSIENT_CODES",
    "CloseCode",
    "ErrorCode",
    "MessageType",
]

MAX_CONTROL_BYTES = 4096


def error_guide() -> dict[str, list[str]]:
    return {
        "codes": [str(code) for code in ErrorCode],
        "transient": sorted(str(code) for code in TRANSIENT_CODES),
        "model": sorted(str(code) for code in MODEL_CODES),
    }


class ProtocolError(FrameError):
    """A client mistake: reported as an error message; the connection stays open."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code)


@dataclass(frozen=True)
class ConfigUpdate:
    model: str | None = None
    colormap: str | None = None
    output: str | None = None
    steady: bool | None = None
    new_scene: bool = False


def _choice(value: Any, field: str, allowed: dict, code: ErrorCode) -> str:
    if not isinstance(value, str) or value not in allowed:
        shown = repr(value)[:64]
        raise ProtocolError(code, f"unknown {field} {shown}; choose one of {', '.join(allowed)}")
    return value


def _flag(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ProtocolError(ErrorCode.BAD_VALUE, f"{field} takes true or false, not {repr(value)[:32]}")


def parse_control(text: str) -> ConfigUpdate:
    """Parse a text message from the client; ProtocolError says exactly what is wrong."""
    if len(text) > MAX_CONTROL_BYTES:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"control messages are at most {MAX_CONTROL_BYTES} bytes"
        )
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "text messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "text messages must be JSON objects")
    kind = message.get("type")
    if kind != MessageType.CONFIG:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown message type {str(kind)[:32]!r}; the only one is 'config'"
        )
    unknown = sorted(set(message) - {"type", *CONFIG_FIELDS})
    if unknown:
        raise ProtocolError(
            ErrorCode.UNKNOWN_FIELD,
            f"unknown field(s) {', '.join(unknown)[:64]}; config takes {', '.join(CONFIG_FIELDS)}",
        )
    model, colormap, output = message.get("model"), message.get("colormap"), message.get("output")
    return ConfigUpdate(
        model=None if model is None else _choice(model, "model", known_models(), ErrorCode.UNKNOWN_MODEL),
        colormap=None
        if colormap is None
        else _choice(colormap, "colormap", COLORMAPS, ErrorCode.UNKNOWN_COLORMAP),
        output=None if output is None else _choice(output, "output", OUTPUTS, ErrorCode.UNKNOWN_OUTPUT),
        steady=_flag(message.get("steady"), "steady"),
        new_scene=bool(_flag(message.get("new_scene"), "new_scene")),
    )


def dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def error_message(code: ErrorCode, message: str, seq: int | None = None, refuses_config: bool = False) -> str:
    """An error: a frame's (``seq``), or the stream's; ``refuses_config``: the answer to the
    client's last config message (``"reply_to": "config"``), told apart from an error about the
    stream that came before it (the start-up check of the default model, say)."""
    body: dict[str, Any] = {"type": MessageType.ERROR, "code": str(code), "message": message}
    if seq is not None:
        body["seq"] = seq
    if refuses_config:
        body["reply_to"] = str(MessageType.CONFIG)
    return dump(body)


def dropped_message(ranges: list[list[int]], reasons: dict[str, int], total: int) -> str:
    return dump({"type": MessageType.DROPPED, "seqs": ranges, "reasons": reasons, "dropped": total})


def depth_message(
    *,
    seq: int,
    model: str,
    timings_ms: dict[str, float],
    dropped: int,
    width: int,
    height: int,
    random_weights: bool,
    output: str = DEFAULT_OUTPUT,
    raw: dict | None = None,
    colormap: str | None = None,
    kind: DepthKind = DepthKind.RELATIVE,
    display_range: tuple[float, float] | None = None,
    alignment: dict | None = None,
    camera: dict | None = None,
) -> str:
    body = {
        "type": MessageType.DEPTH,
        "seq": seq,
        "model": model,
        "depth": str(kind),  # relative (larger is closer) or metric (metres, larger is farther)
        "colormap": colormap,  # the one this JPEG is drawn with (a switch takes effect in order)
        "dropped": dropped,
        "timings_ms": {stage: round(ms, 2) for stage, ms in timings_ms.items()},
        "width": width,
        "height": height,
        "random_weights": random_weights,
        "binary": list(OUTPUTS[output]),  # the binary messages that follow, in order
        # how this relative depth was aligned to the stream (aligned = scale * depth + shift):
        # null when it was not (steady off, metric depth)
        "alignment": alignment,
        # the camera the model estimated (fx, fy, cx, cy in this frame's pixels, hfov_deg,
        # vfov_deg; smoothed over the stream with steady on): null from a model without one
        "camera": camera,
    }
    if display_range is not None:
        # the colorbar's ends for this JPEG, in the model's units: bright (near) to dark (far)
        near, far = display_range if kind.is_distance else display_range[::-1]
        body["colorbar"] = {"near": round(near, 4), "far": round(far, 4), "units": kind.units}
    if raw is not None:
        body["raw"] = raw
    return dump(body)


def hello_message(**fields: Any) -> str:
    """The greeting: the stream's settings, what it may choose from, and what paces it."""
    return dump({"type": MessageType.HELLO, **fields})


def config_ack(**fields: Any) -> str:
    """A control message's acknowledgement: the stream's settings and accounts now."""
    return dump({"type": MessageType.CONFIG, **fields})
