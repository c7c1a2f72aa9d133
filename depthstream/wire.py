"""The WebSocket wire protocol's vocabulary, shared by the bridge (bridge.protocol builds and
parses its messages) and every client (client.stream reads them): message types, error codes
and what a client should make of them, the outputs a frame can ask for, and the close codes.
One definition, below both sides, so neither writes them again.
"""

from __future__ import annotations

import enum


class MessageType(enum.StrEnum):
    HELLO = "hello"  # server: once on connect
    CONFIG = "config"  # client: a control message; server: its acknowledgement
    DEPTH = "depth"  # server: an answered frame's header, followed by its binaries
    ERROR = "error"  # server: a frame's error (with its seq) or the stream's (without)
    DROPPED = "dropped"  # server: frames that will not be answered, as seq ranges


class ErrorCode(enum.StrEnum):
    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_COLORMAP = "unknown_colormap"
    UNKNOWN_OUTPUT = "unknown_output"
    BAD_VALUE = "bad_value"  # a config field of the wrong type (steady and new_scene take true/false)
    BAD_IMAGE = "bad_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_SMALL = "image_too_small"
    MESSAGE_TOO_LARGE = "message_too_large"
    MODEL_NOT_READY = "model_not_ready"
    MODEL_MISMATCH = "model_mismatch"
    TRITON_UNAVAILABLE = "triton_unavailable"
    TIMEOUT = "timeout"
    BUSY = "busy"
    INFERENCE_FAILED = "inference_failed"
    BAD_OUTPUT = "bad_output"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    UNAUTHORIZED = "unauthorized"
    SHUTTING_DOWN = "shutting_down"


# What a client should make of each code: sent in ``hello`` so that clients (the page) read it
# from the server instead of keeping a copy. Transient: pause briefly, then go on sending.
# About the model: the chosen model (or the server behind it) is the problem, not the frame.
TRANSIENT_CODES = frozenset(
    {
        ErrorCode.TRITON_UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.BUSY,
        ErrorCode.MODEL_NOT_READY,
        ErrorCode.RATE_LIMITED,
    }
)
MODEL_CODES = frozenset({ErrorCode.MODEL_NOT_READY, ErrorCode.TRITON_UNAVAILABLE, ErrorCode.MODEL_MISMATCH})


# The errors that answer a control message instead of its acknowledgement (a refused config);
# a config over the control rate is ignored (counted in the next ack's controls_refused).
CONFIG_ERRORS = frozenset(
    {
        ErrorCode.BAD_JSON,
        ErrorCode.UNKNOWN_TYPE,
        ErrorCode.UNKNOWN_FIELD,
        ErrorCode.UNKNOWN_MODEL,
        ErrorCode.UNKNOWN_COLORMAP,
        ErrorCode.UNKNOWN_OUTPUT,
        ErrorCode.BAD_VALUE,
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.MODEL_NOT_READY,
        ErrorCode.MODEL_MISMATCH,
        ErrorCode.TRITON_UNAVAILABLE,
    }
)


class CloseCode(enum.IntEnum):
    """How the bridge ends a WebSocket, and what a client should do (RFC 6455's codes)."""

    NORMAL = 1000  # the stream ended (the client closed, or read nothing for send_timeout_s)
    GOING_AWAY = 1001  # the bridge drains (SIGTERM, a pod deletion): reconnect, to another one
    POLICY = 1008  # a forbidden origin or a wrong token: do not retry as is
    TOO_BIG = 1009  # a message over max_message_bytes
    TRY_AGAIN_LATER = 1013  # the bridge is at its connection limit: retry later


# Which error code comes with which close, when the bridge refuses or ends a connection
CLOSE_FOR = {
    ErrorCode.FORBIDDEN_ORIGIN: CloseCode.POLICY,
    ErrorCode.UNAUTHORIZED: CloseCode.POLICY,
    ErrorCode.SHUTTING_DOWN: CloseCode.GOING_AWAY,
    ErrorCode.BUSY: CloseCode.TRY_AGAIN_LATER,
    ErrorCode.MESSAGE_TOO_LARGE: CloseCode.TOO_BIG,
}


# What each answered frame carries, in this order after its JSON header: the colorized JPEG, the
# raw depth (depthstream/render/raw_depth.py), or both.
OUTPUTS = {"color": ("jpeg",), "raw": ("uint16le",), "both": ("jpeg", "uint16le"), "points": ("uint16le",)}
# "points": the raw depth of every POINTS_STEP-th pixel each way, what a point cloud of one point
# per 2x2 pixels needs (the page's 3D view): a quarter of the raw bytes, and no JPEG
POINTS_STEP = 2
DEFAULT_OUTPUT = "color"
# what a client's config message may set: steady, the stream's alignment of relative depth on
# or off (depthstream/render/steady.py); new_scene, start that alignment again (the source changed)
CONFIG_FIELDS = ("model", "colormap", "output", "steady", "new_scene")
JPEG, RAW = "jpeg", "uint16le"  # the binary messages a depth header lists
