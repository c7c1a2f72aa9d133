"""uvicorn's websockets-sansio protocol, with a close that a client can always read.

When a message breaks the protocol (above all, one over the size limit: close 1009), the
websockets library fails the connection and uvicorn closes the TCP socket at once. A client that
is still writing the rest of that message then hits a closed socket: the kernel answers with a
reset, and the reset throws away the close frame before the client reads it. The client sees a
connection reset, not 1009.

This protocol sends the close frame and half-closes (FIN), then reads and discards whatever the
client still sends until it closes its side, for at most DRAIN_TIMEOUT_S: the ceiling on what a
failing client can cost, in time, after it has been refused.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

DRAIN_TIMEOUT_S = 2.0


class DrainingCloseProtocol(WebSocketsSansIOProtocol):
    def handle_parser_exception(self) -> None:
        if self.close_sent:
            return  # already closing: websockets' parser now discards what arrives
        assert self.conn.close_sent is not None
        close = self.conn.close_sent
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        # uvicorn closes the transport when the app returns, unless a close timer is pending
        self.close_timer = self.loop.call_later(DRAIN_TIMEOUT_S, self.transport.close)
        if not self.transport.is_reading():
            self.transport.resume_reading()
