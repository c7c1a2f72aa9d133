"""The project's stream client (client/stream.py): every outcome the protocol has, accounted,
against the real bridge; its books and its parsing on made-up messages."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from client.stream import (
    Accounts,
    Answer,
    Dropped,
    Error,
    ServerClosed,
    StreamClient,
    config_message,
    outcome_of,
)
from depthstream.render import raw_depth
from depthstream.wire import CloseCode, ErrorCode
from tests.helpers import free_port
from tests.wire import bridge_up, jpeg, wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_the_books_balance_whatever_the_outcome():
    books = Accounts(sent=7)
    for outcome in (
        Answer({"type": "depth", "seq": 0}, [b"jpeg"]),
        Error("bad_image", "corrupt", seq=1),
        Dropped([[2, 4]], {"replaced": 3}, total=3),
        Error("rate_limited", "slow down"),  # about the stream: no frame settled
    ):
        books.record(outcome)
    assert (books.answered, books.failed, books.dropped) == (1, {"bad_image": 1}, 3)
    assert books.stream_errors == {"rate_limited": 1} and books.pending == 2
    books.connection_ended(CloseCode.GOING_AWAY)
    assert books.in_transit == 2 and books.pending == 0 and books.closes == [1001]
    assert books.settled + books.in_transit == books.sent


def test_messages_become_outcomes_and_configs_stay_acknowledgements():
    answer = outcome_of({"type": "depth", "seq": 3, "binary": ["jpeg", "uint16le"]}, [b"J", b"R"])
    assert isinstance(answer, Answer) and (answer.seq, answer.jpeg, answer.raw) == (3, b"J", b"R")
    assert outcome_of({"type": "config", "model": "x"}, []) is None
    assert outcome_of({"type": "dropped", "seqs": [[1, 1], [5, 6]], "dropped": 3}, []).count() == 3
    assert config_message(model="m", colormap=None) == '{"type": "config", "model": "m"}'
    with pytest.raises(ValueError, match="config takes model, colormap, output"):
        config_message(speed="fast")


def test_a_stream_through_the_real_bridge_answers_fails_and_accounts(bridge):
    with StreamClient.connect(bridge.ws_url) as stream:
        assert stream.hello["type"] == "hello" and "depth_anything_v2_small_252" in stream.hello["models"]
        ack = stream.configure(model="depth_anything_v2_small_252", output="both")
        assert ack["type"] == "config" and ack["model"] == "depth_anything_v2_small_252"
        first = stream.send(jpeg(320, 240))
        answer = stream.next_outcome()
        assert isinstance(answer, Answer) and answer.seq == first == 0
        image = cv2.imdecode(np.frombuffer(answer.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (240, 320, 3)
        assert raw_depth.decode(answer.raw, answer.header["raw"]).shape == (240, 320)
        bad = stream.send(b"\xff\xd8 not a JPEG")
        error = stream.next_outcome()
        assert isinstance(error, Error) and (error.code, error.seq) == (ErrorCode.UNSUPPORTED_FORMAT, bad)
        refused = stream.configure(model="no_such_model")
        assert refused["type"] == "error" and refused["code"] == ErrorCode.UNKNOWN_MODEL
        books = stream.accounts
        assert (books.sent, books.answered, books.failed, books.pending) == (
            2,
            1,
            {"unsupported_format": 1},
            0,
        )
        assert books.stream_errors == {"unknown_model": 1}


def test_a_draining_bridge_answers_what_it_holds_and_the_rest_is_in_transit(triton):
    """SIGTERM to a real bridge process: the frame in flight is answered, then close 1001; the
    client's books hold every frame sent (answered, dropped or in transit), and it reconnects."""
    port = free_port()
    command = [sys.executable, "-m", "bridge", "--port", str(port), "--triton-url", triton.settings.grpc_url]
    process = subprocess.Popen([*command, "--log-level", "warning"], cwd=ROOT)
    try:
        assert wait_until(lambda: bridge_up(port), timeout_s=30)
        stream = StreamClient.connect(f"ws://127.0.0.1:{port}/ws")
        for _ in range(3):
            stream.send(jpeg(640, 480))
        process.send_signal(signal.SIGTERM)
        outcomes = []
        with pytest.raises(ServerClosed) as closed:
            while True:
                outcomes.append(stream.next_outcome(timeout_s=30))
        assert closed.value.draining and stream.accounts.closes == [CloseCode.GOING_AWAY]
        assert any(isinstance(o, Answer) for o in outcomes), "the frame in flight is answered"
        seqs = [o.seq for o in outcomes if not isinstance(o, Dropped)]
        seqs += [
            seq for o in outcomes if isinstance(o, Dropped) for a, b in o.seqs for seq in range(a, b + 1)
        ]
        assert len(seqs) == len(set(seqs)) and set(seqs) <= {0, 1, 2}, "each frame settled once at most"
        books = stream.accounts
        assert (books.sent, books.settled, books.in_transit) == (3, len(seqs), 3 - len(seqs))
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_the_protocol_pages_client_example_runs(bridge, tmp_path, monkeypatch):
    import re

    readme = (ROOT / "docs" / "protocol.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "StreamClient" in b)
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((200, 320, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block.replace("ws://127.0.0.1:8080/ws", bridge.ws_url), namespace)  # noqa: S102
    assert namespace["depth"].shape == (200, 320)
    assert namespace["stream"].accounts.answered == 1


def test_only_the_error_that_refuses_a_config_is_taken_for_its_answer():
    """Found by make chaos: an error about the stream sent at connect (the default model not
    served by the stream's Triton, mid-reload) was taken for the answer to the client's first
    config; that config's real acknowledgement then answered the next one, with stale books."""
    from client.stream import answers_config

    start_up = {"type": "error", "code": "model_not_ready", "message": "not served"}
    refusal = {**start_up, "reply_to": "config"}
    assert not answers_config(start_up)
    assert answers_config(refusal) and answers_config({"type": "config", "received": 0})
    assert not answers_config({"type": "error", "code": "rate_limited", "message": "", "reply_to": "config"})
