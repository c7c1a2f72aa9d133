"""uvicorn's websockets-sansio protocol, with a close that a client can always read.

When a message breaks the protocol (above all, one over the size limit: close 1009), the
websockets library fails the connection and uvicorn closes the TCP socket at once. A client that
is still writing the rest of that message then hits a closed socket: the kernel answers with a
reset, and the reset throws away the close frame before the client reads it. The client sees a
connection reset, not 1009.

This protocol sends the close frame and half-closes (FIN), then reads and discards whatever the
client still sends until it closes its side, for at most DRAIN_TIMEOUT_S, and for at most
MAX_DRAINING sockets at once (beyond, a refused client is cut off at once, as before): the
ceilings on what refused clients can still cost, in time and in sockets. A draining socket is no
longer a stream, so BRIDGE_MAX_CONNECTIONS does not count it.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

DRAIN_TIMEOUT_S = 2.0
MAX_DRAINING = 64


class DrainingCloseProtocol(WebSocketsSansIOProtocol):
    draining = 0  # sockets draining now, in this process
    is_draining = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.is_draining:
            DrainingCloseProtocol.draining -= 1
            self.is_draining = False
        super().connection_lost(exc)

    def handle_parser_exception(self) -> None:
        if self.close_sent:
            return  # already closing: websockets' parser now discards what arrives
        assert self.conn.close_sent is not None
        close = self.conn.close_sent
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if not self.transport.can_write_eof() or DrainingCloseProtocol.draining >= MAX_DRAINING:
            self.transport.close()
            return
        DrainingCloseProtocol.draining += 1
        self.is_draining = True
        self.transport.write_eof()
        # uvicorn closes the transport when the app returns, unless a close timer is pending
        self.close_timer = self.loop.call_later(DRAIN_TIMEOUT_S, self.transport.close)
        if not self.transport.is_reading():
            self.transport.resume_reading()
