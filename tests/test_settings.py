"""Bridge settings: flags beat BRIDGE_* variables beat defaults; bad values name both."""

from __future__ import annotations

import pytest

from bridge.settings import BridgeSettings, SettingsError, parse_settings


def test_defaults_bind_loopback_and_are_valid():
    settings = parse_settings([], environ={})
    assert settings == BridgeSettings()
    assert (settings.host, settings.port, settings.triton_url) == ("127.0.0.1", 8080, "127.0.0.1:8001")


def test_environment_then_flags():
    env = {"BRIDGE_PORT": "9000", "BRIDGE_JPEG_QUALITY": "60", "BRIDGE_TRITON_URL": "triton:8001"}
    assert parse_settings([], environ=env).port == 9000
    settings = parse_settings(["--port", "9100"], environ=env)
    assert (settings.port, settings.jpeg_quality, settings.triton_url) == (9100, 60, "triton:8001")


@pytest.mark.parametrize(
    "argv,env,words",
    [
        (["--port", "70000"], {}, ["--port", "BRIDGE_PORT"]),
        ([], {"BRIDGE_PORT": "http"}, ["BRIDGE_PORT", "'http'"]),
        (["--jpeg-quality", "0"], {}, ["--jpeg-quality"]),
        (["--default-model", "resnet"], {}, ["depth_anything_v2_small"]),
        (["--default-colormap", "jet3"], {}, ["inferno"]),
        (["--triton-url", "http://x/y"], {}, ["host:port"]),
        (["--request-timeout-s", "-1"], {}, ["positive"]),
        (["--web-dir", "/nonexistent"], {}, ["index.html"]),
    ],
)
def test_bad_values_are_refused_clearly(argv, env, words):
    with pytest.raises(SettingsError) as error:
        parse_settings(argv, environ=env)
    for word in words:
        assert word in str(error.value)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        BridgeSettings().port = 1  # type: ignore[misc]
