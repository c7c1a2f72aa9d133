"""One Python client for the bridge's WebSocket stream (the protocol: depthstream.wire).

Connect (with the access token and, if asked, an Origin), read ``hello``, change the stream with
``configure``, send frames (each gets its ``seq``), and read outcomes: every frame ends in
exactly one of an :class:`Answer` (its header and binaries), an :class:`Error` with its seq, or
a seq range of a :class:`Dropped` notice; an error without a seq is about the stream. The
:class:`Accounts` keep the books, and a server that drains (close 1001) leaves the frames still
in transit counted as such, so a client that reconnects (``reconnect``) knows what it lost.

    with StreamClient.connect("ws://127.0.0.1:8080/ws", token=...) as stream:
        stream.configure(model="depth_anything_v2_small_252")
        seq = stream.send(jpeg_bytes)
        outcome = stream.next_outcome()   # Answer, Error or Dropped

``AsyncStreamClient`` is the same over asyncio, for many streams in one process. Only
``websockets`` and ``depthstream`` are needed: the client carries nothing of the bridge.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from depthstream.wire import CONFIG_ERRORS, CONFIG_FIELDS, JPEG, RAW, CloseCode, MessageType

RECV_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Answer:
    """An answered frame: its header (``seq``, ``model``, ``timings_ms``, ...) and binaries."""

    header: dict[str, Any]
    binaries: list[bytes]

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    def binary(self, kind: str) -> bytes | None:
        listed = self.header.get("binary", [])
        return self.binaries[listed.index(kind)] if kind in listed else None

    @property
    def jpeg(self) -> bytes | None:
        return self.binary(JPEG)

    @property
    def raw(self) -> bytes | None:
        return self.binary(RAW)


@dataclass(frozen=True)
class Error:
    """An error: a frame's (``seq`` set) or the stream's (``seq`` None)."""

    code: str
    message: str
    seq: int | None = None


@dataclass(frozen=True)
class Dropped:
    """Frames the server will not answer, as ``[first, last]`` ranges, and why."""

    seqs: list[list[int]]
    reasons: dict[str, int]
    total: int  # the stream's dropped count so far

    def count(self) -> int:
        return sum(last - first + 1 for first, last in self.seqs)


Outcome = Answer | Error | Dropped


@dataclass
class Accounts:
    """What became of every frame sent: each ends answered, failed or dropped, or, when the
    connection ends first, in transit."""

    sent: int = 0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by error code, frames with a seq
    dropped: int = 0
    stream_errors: dict[str, int] = field(default_factory=dict)  # errors about the stream
    in_transit: int = 0  # sent on a connection that ended before they were settled
    closes: list[int] = field(default_factory=list)  # the close codes seen

    @property
    def settled(self) -> int:
        return self.answered + sum(self.failed.values()) + self.dropped

    @property
    def pending(self) -> int:
        """Sent on the current connection and not settled yet."""
        return self.sent - self.settled - self.in_transit

    def record(self, outcome: Outcome) -> None:
        if isinstance(outcome, Answer):
            self.answered += 1
        elif isinstance(outcome, Dropped):
            self.dropped += outcome.count()
        elif outcome.seq is not None:
            self.failed[outcome.code] = self.failed.get(outcome.code, 0) + 1
        else:
            self.stream_errors[outcome.code] = self.stream_errors.get(outcome.code, 0) + 1

    def connection_ended(self, close_code: int | None) -> None:
        self.in_transit += self.pending
        if close_code is not None:
            self.closes.append(close_code)


class ServerClosed(Exception):
    """The server closed the stream; ``code`` says why (CloseCode.GOING_AWAY: it drains)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"the server closed the stream ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason

    @property
    def draining(self) -> bool:
        return self.code == CloseCode.GOING_AWAY


def connect_options(token: str | None, origin: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # frames are JPEGs and float16 depth: per-message deflate would cost CPU for nothing
    options: dict[str, Any] = {"max_size": None, "compression": None, "additional_headers": headers}
    if origin is not None:
        options["origin"] = origin
    return options


def config_message(**changes: str | bool | None) -> str:
    unknown = set(changes) - set(CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"config takes {', '.join(CONFIG_FIELDS)}; not {', '.join(sorted(unknown))}")
    return json.dumps(
        {"type": str(MessageType.CONFIG), **{k: v for k, v in changes.items() if v is not None}}
    )


def answers_config(message: dict[str, Any]) -> bool:
    """Whether a message answers a control message: its acknowledgement, or the error that
    refused it, which says so (``"reply_to": "config"``). Another error about the stream, one
    that came before the config was read (the default model not served, at start-up) or a
    rate-limit notice, is not that answer (found by make chaos: taken for it, the real
    acknowledgement came later and was read as the answer to the next config)."""
    if message.get("type") == MessageType.CONFIG:
        return True
    return (
        message.get("type") == MessageType.ERROR
        and message.get("seq") is None
        and message.get("reply_to") == MessageType.CONFIG
        and message.get("code") in CONFIG_ERRORS
    )


def outcome_of(message: dict[str, Any], binaries: list[bytes]) -> Outcome | None:
    """The outcome a server message settles, or None (a config acknowledgement, a hello)."""
    kind = message.get("type")
    if kind == MessageType.DEPTH:
        return Answer(message, binaries)
    if kind == MessageType.ERROR:
        return Error(str(message.get("code")), str(message.get("message", "")), message.get("seq"))
    if kind == MessageType.DROPPED:
        return Dropped(message.get("seqs", []), message.get("reasons", {}), int(message.get("dropped", 0)))
    return None


class StreamClient:
    """The stream over websockets' sync client (tests, scripts)."""

    def __init__(self, ws, hello: dict[str, Any], accounts: Accounts | None = None) -> None:
        self.ws = ws
        self.hello = hello
        self.accounts = accounts or Accounts()
        self.next_seq = 0  # the server numbers a connection's frames from 0
        self.acks: list[dict[str, Any]] = []  # config acknowledgements, in order

    @classmethod
    def connect(
        cls, url: str, token: str | None = None, origin: str | None = None, accounts: Accounts | None = None
    ) -> StreamClient:
        from websockets.sync.client import connect

        # a connection this client owns past one ``with``: entered here, closed by close()
        ws = connect(url, **connect_options(token, origin)).__enter__()
        hello = json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        if hello.get("type") != MessageType.HELLO:
            ws.close()
            raise ServerClosed(None, f"expected hello, got {hello.get('type')!r}: {hello.get('message', '')}")
        return cls(ws, hello, accounts)

    def reconnect(self, url: str, token: str | None = None, origin: str | None = None) -> StreamClient:
        """A new connection keeping these books (after a drain: what was lost is in_transit)."""
        return StreamClient.connect(url, token, origin, self.accounts)

    def configure(self, **changes: str | bool | None) -> dict[str, Any]:
        """Change model, colormap or output; returns the server's acknowledgement, or the error
        that refused it. Over the control rate the server ignores a config (and says so): this
        then waits out ``RECV_TIMEOUT_S``."""
        self.ws.send(config_message(**changes))
        while True:
            message = self._recv_json()
            answer = answers_config(message)
            self._settle(message)  # records an error; an answer to an earlier frame is settled
            if answer:
                return message

    def send(self, frame: bytes) -> int:
        self.ws.send(frame)
        self.accounts.sent += 1
        self.next_seq += 1
        return self.next_seq - 1

    def next_outcome(self, timeout_s: float = RECV_TIMEOUT_S) -> Outcome:
        while True:
            outcome = self._settle(self._recv_json(timeout_s), timeout_s)
            if outcome is not None:
                return outcome

    def _settle(self, message: dict[str, Any], timeout_s: float = RECV_TIMEOUT_S) -> Outcome | None:
        if message.get("type") == MessageType.CONFIG:
            self.acks.append(message)  # the stream's settings and the bridge's own accounts
        count = len(message.get("binary", [])) if message.get("type") == MessageType.DEPTH else 0
        binaries = [self._recv(timeout_s) for _ in range(count)]
        if any(not isinstance(b, bytes) for b in binaries):
            raise ValueError("a depth header must be followed by the binaries it lists")
        outcome = outcome_of(message, binaries)
        if outcome is not None:
            self.accounts.record(outcome)
        return outcome

    def _recv(self, timeout_s: float = RECV_TIMEOUT_S):
        from websockets.exceptions import ConnectionClosed

        try:
            return self.ws.recv(timeout=timeout_s)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            self.accounts.connection_ended(code)
            raise ServerClosed(code, exc.rcvd.reason if exc.rcvd is not None else "") from None

    def _recv_json(self, timeout_s: float = RECV_TIMEOUT_S) -> dict[str, Any]:
        message = self._recv(timeout_s)
        if not isinstance(message, str):
            raise ValueError("expected a text message, got a binary one")
        return json.loads(message)

    def close(self) -> None:
        self.accounts.connection_ended(None)
        self.ws.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncStreamClient:
    """The same stream over asyncio (many streams in one process: the benchmarks)."""

    def __init__(self, ws, hello: dict[str, Any], accounts: Accounts | None = None) -> None:
        self.ws = ws
        self.hello = hello
        self.accounts = accounts or Accounts()
        self.next_seq = 0
        # acknowledgements read by next_outcome, for a caller that reads outcomes in one task
        # and sends its config from another (send_config, then acks.get())
        self.acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @classmethod
    async def connect(
        cls, url: str, token: str | None = None, origin: str | None = None
    ) -> AsyncStreamClient:
        from websockets.asyncio.client import connect

        ws = await connect(url, **connect_options(token, origin))
        hello = json.loads(await ws.recv())
        if hello.get("type") != MessageType.HELLO:
            await ws.close()
            raise ServerClosed(None, f"expected hello, got {hello.get('type')!r}")
        return cls(ws, hello)

    async def send_config(self, **changes: str | bool | None) -> None:
        await self.ws.send(config_message(**changes))

    async def configure(self, **changes: str | bool | None) -> dict[str, Any]:
        """Change the stream and wait for the answer (nobody else may be reading outcomes)."""
        from websockets.exceptions import ConnectionClosed

        await self.send_config(**changes)
        try:
            while True:
                message = json.loads(await self.ws.recv())
                answer = answers_config(message)
                await self._settle(message)
                if answer:
                    if message.get("type") == MessageType.CONFIG:
                        self.acks.get_nowait()  # returned here: not left for acks' readers
                    return message
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            self.accounts.connection_ended(code)
            raise ServerClosed(code) from None

    async def send(self, frame: bytes) -> int:
        await self.ws.send(frame)
        self.accounts.sent += 1
        self.next_seq += 1
        return self.next_seq - 1

    async def next_outcome(self) -> Outcome:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                outcome = await self._settle(json.loads(await self.ws.recv()))
                if outcome is not None:
                    return outcome
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            self.accounts.connection_ended(code)
            raise ServerClosed(code) from None

    async def _settle(self, message: dict[str, Any]) -> Outcome | None:
        if message.get("type") == MessageType.CONFIG:
            self.acks.put_nowait(message)
        count = len(message.get("binary", [])) if message.get("type") == MessageType.DEPTH else 0
        binaries = [await self.ws.recv() for _ in range(count)]
        outcome = outcome_of(message, binaries)
        if outcome is not None:
            self.accounts.record(outcome)
        return outcome

    async def close(self) -> None:
        self.accounts.connection_ended(None)
        await self.ws.close()
