"""Every frame ends in exactly one outcome the client hears: a depth answer, an error with its
seq, or a ``dropped`` notice (coalesced). Pure logic first, then the real app (fake Triton)."""

from __future__ import annotations

import time

import pytest

from bridge.admission import RateLimiter
from bridge.notices import MAX_RANGES, NOTICE_INTERVAL_S, DropNotices, DropReason, merged
from tests.app_client import hello, jpeg, make_client
from tests.fake_triton import FakeTriton


@pytest.fixture
def fake() -> FakeTriton:
    return FakeTriton()


def test_ranges_merge_in_order_and_out_of_order():
    assert merged([[5, 5], [1, 2], [3, 3], [9, 9], [8, 8]]) == [[1, 3], [5, 5], [8, 9]]
    assert merged([[1, 4], [2, 3]]) == [[1, 4]]


def test_notices_coalesce_and_count_by_reason():
    notices = DropNotices()
    notices.add(3, DropReason.REPLACED)
    notices.add(4, DropReason.REPLACED)
    notices.add(7, DropReason.EXPIRED)
    notices.add(5, DropReason.RATE_LIMITED)
    assert notices.pending.is_set()
    assert notices.take() == ([[3, 5], [7, 7]], {"replaced": 2, "expired": 1, "rate_limited": 1})
    assert not notices.pending.is_set() and notices.take() is None
    notices.add(8, DropReason.REPLACED)
    assert 0 < notices.due_in_s() <= NOTICE_INTERVAL_S, "at most one notice per interval"
    for seq in range(10, 10 + 2 * MAX_RANGES, 2):
        notices.add(seq, DropReason.RATE_LIMITED)
    assert notices.due_in_s() == 0, "a fragmented notice goes out at once"


def test_rate_limiter_below_one_frame_a_second_grants_frames():
    limiter = RateLimiter(0.5)
    assert limiter.allow(), "the first frame"
    assert not limiter.allow()
    limiter.updated -= 2.0  # two seconds pass: one more frame at 0.5 frames/s
    assert limiter.allow() and not limiter.allow()


def outcomes(ws, sent: int, timeout_s: float = 20) -> dict:
    """Read until every one of ``sent`` frames has its outcome; every seq must come exactly once."""
    settled: dict[int, str] = {}
    notices = answers = 0
    deadline = time.monotonic() + timeout_s
    while len(settled) < sent:
        assert time.monotonic() < deadline, f"no outcome for {sorted(set(range(sent)) - set(settled))}"
        message = ws.receive_json()
        if message["type"] == "depth":
            ws.receive_bytes()
            answers += 1
            seqs = [message["seq"]]
            kind = "answered"
        elif message["type"] == "dropped":
            notices += 1
            seqs = [s for first, last in message["seqs"] for s in range(first, last + 1)]
            kind = "dropped"
        elif message["type"] == "error" and "seq" in message:
            seqs, kind = [message["seq"]], "error"
        else:
            continue
        for seq in seqs:
            assert seq not in settled, f"seq {seq} settled twice"
            settled[seq] = kind
    return {"settled": settled, "notices": notices, "answers": answers}


@pytest.mark.parametrize("max_fps", [1000.0, 5.0])
def test_every_frame_sent_too_fast_has_exactly_one_outcome(fake, max_fps):
    """Replaced in the slot, over the rate limit, bad, or answered: the client hears each one,
    and notices are coalesced (far fewer messages than frames)."""
    fake.delay_s = 0.05
    sent = 60
    with make_client(fake, max_fps=max_fps) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        started = time.monotonic()
        for seq in range(sent):  # the last one is bad: it is never replaced, so it reaches its turn
            ws.send_bytes(b"not an image" if seq == sent - 1 else jpeg())
        result = outcomes(ws, sent)
        elapsed = time.monotonic() - started
        ws.send_text('{"type": "config"}')
        accounts = ws.receive_json()
        while accounts["type"] != "config":
            accounts = ws.receive_json()
    kinds = list(result["settled"].values())
    # at 5 frames/s the bad last frame is over the limit (dropped); at 1000 it earns its error
    assert kinds.count("error") == (1 if max_fps > 100 else 0)
    assert kinds.count("dropped") > 0 and kinds.count("answered") > 0
    assert accounts["received"] == sent and accounts["dropped"] == kinds.count("dropped")
    assert result["notices"] <= result["answers"] + elapsed / NOTICE_INTERVAL_S + 2
    assert result["notices"] < kinds.count("dropped"), "coalesced, not one per frame"


def test_the_rate_limit_drops_and_counts_each_frame(fake):
    with make_client(fake, max_fps=1) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        for _ in range(4):
            ws.send_bytes(jpeg())
        result = outcomes(ws, 4)
    assert list(result["settled"].values()).count("dropped") == 3
    assert result["settled"][0] == "answered"


def test_control_messages_have_a_ceiling_counted_and_said_once(fake):
    """A flood of model switches: at most max_controls_per_s are applied, the rest refused and
    counted, one error a second, and Triton asked about each model at most once a second."""
    other = "midas_dpt_beit_base_384"
    with make_client(fake, max_controls_per_s=5) as client, client.websocket_connect("/ws") as ws:
        hello(ws)
        calls_before = fake.calls.get("get_model_config", 0)
        started = time.monotonic()
        for i in range(60):
            model = other if i % 2 else "depth_anything_v2_small"
            ws.send_text(f'{{"type": "config", "model": "{model}", "colormap": "turbo"}}')
        time.sleep(0.2)
        # a later one is applied again once the bucket refills
        ws.send_text('{"type": "config"}')
        messages = []
        while not (
            messages and messages[-1]["type"] == "config" and messages[-1].get("controls_refused", 0) > 0
        ):
            messages.append(ws.receive_json())
        elapsed = time.monotonic() - started
    acks = [m for m in messages if m["type"] == "config"]
    errors = [m for m in messages if m["type"] == "error"]
    refused = acks[-1]["controls_refused"]
    assert len(acks) + refused == 61, "every control message applied or counted"
    assert len(acks) <= 5 + 5 * elapsed + 1 and refused >= 50
    codes = [e["code"] for e in errors]
    assert set(codes) == {"rate_limited"} and len(codes) <= 1 + elapsed, "said once a second, not per message"
    assert fake.calls.get("get_model_config", 0) - calls_before <= 2 * (1 + elapsed), "cached switches"
