"""The wire protocol's parser: exact errors for bad control messages, and a fuzz test."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.protocol import (
    OUTPUTS,
    ConfigUpdate,
    ErrorCode,
    ProtocolError,
    depth_message,
    error_message,
    parse_control,
)
from depthstream.contract import MODELS
from depthstream.render.colorize import COLORMAPS


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"type": "config"}', ConfigUpdate()),
        (
            '{"type": "config", "model": "midas_dpt_beit_base_384"}',
            ConfigUpdate(model="midas_dpt_beit_base_384"),
        ),
        ('{"type": "config", "colormap": "turbo"}', ConfigUpdate(colormap="turbo")),
        (
            '{"type": "config", "model": "depth_anything_v2_small", "colormap": "gray"}',
            ConfigUpdate("depth_anything_v2_small", "gray"),
        ),
    ],
)
def test_valid_config(text, expected):
    assert parse_control(text) == expected


@pytest.mark.parametrize(
    "text,code",
    [
        ("", ErrorCode.BAD_JSON),
        ("{", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        ('"config"', ErrorCode.BAD_JSON),
        ('{"model": "depth_anything_v2_small"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "reboot"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "config", "model": "nope"}', ErrorCode.UNKNOWN_MODEL),
        ('{"type": "config", "model": "../../etc/passwd"}', ErrorCode.UNKNOWN_MODEL),
        ('{"type": "config", "model": 7}', ErrorCode.UNKNOWN_MODEL),
        ('{"type": "config", "colormap": "jet2"}', ErrorCode.UNKNOWN_COLORMAP),
        ('{"type": "config", "colormap": null, "fps": 30}', ErrorCode.UNKNOWN_FIELD),
        ('{"type": "config", "model": "' + "x" * 5000 + '"}', ErrorCode.MESSAGE_TOO_LARGE),
        ("[" * 100000 + "]" * 100000, ErrorCode.MESSAGE_TOO_LARGE),
    ],
)
def test_invalid_control_gets_its_code(text, code):
    with pytest.raises(ProtocolError) as error:
        parse_control(text)
    assert error.value.code == code and error.value.message


def test_unknown_value_is_not_echoed_at_length():
    with pytest.raises(ProtocolError) as error:
        parse_control(json.dumps({"type": "config", "model": "A" * 3000}))
    assert "A" * 100 not in error.value.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_parsed_or_refused_cleanly(text):
    try:
        update = parse_control(text)
    except ProtocolError as error:
        assert error.code in ErrorCode.__members__.values()
    else:
        assert isinstance(update, ConfigUpdate)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


# every served name, every colormap and output, and anything else JSON can hold
field_values = json_values | st.sampled_from([*MODELS, *COLORMAPS, *OUTPUTS])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "model", "colormap", "output", "extra"]), field_values))
def test_any_json_object_is_parsed_or_refused_cleanly(message):
    message.setdefault("type", "config")
    try:
        update = parse_control(json.dumps(message))
    except ProtocolError:
        return
    # accepted: exactly the values the message carried, each one the server knows
    assert update.model == message.get("model") and update.model in (None, *MODELS)
    assert update.colormap == message.get("colormap") and update.colormap in (None, *COLORMAPS)
    assert update.output == message.get("output") and update.output in (None, *OUTPUTS)


def test_server_messages_are_strict_json():
    error = json.loads(error_message(ErrorCode.BAD_IMAGE, "nope", seq=3))
    assert error == {"type": "error", "code": "bad_image", "message": "nope", "seq": 3}
    depth = json.loads(
        depth_message(
            seq=4,
            model="m",
            timings_ms={"infer": 1.234},
            dropped=2,
            width=64,
            height=48,
            random_weights=False,
        )
    )
    assert depth["seq"] == 4 and depth["dropped"] == 2 and depth["timings_ms"] == {"infer": 1.23}
