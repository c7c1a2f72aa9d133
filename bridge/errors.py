"""The bridge's one error family: what went wrong with a frame or a stream, with the wire code
the client sees (depthstream.wire.ErrorCode) and a message that is safe to show (a server's own
error text stays in the bridge's log).

    FrameError                 any of them (the code says which)
      ProtocolError            the client's mistake (bridge/protocol.py): counted as rejected
      TritonError              the model server's failure (bridge/triton.py): counted as failed
      BadOutput                the model's answer cannot be used or drawn: counted as failed
"""

from __future__ import annotations

from depthstream.wire import ErrorCode


class FrameError(Exception):
    code: ErrorCode = ErrorCode.INFERENCE_FAILED

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadOutput(FrameError):
    """The model's output is wrongly shaped, or has no finite depth to draw."""

    code = ErrorCode.BAD_OUTPUT
