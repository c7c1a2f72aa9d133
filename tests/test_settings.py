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


def test_token_is_required_off_loopback():
    with pytest.raises(SettingsError) as error:
        parse_settings(["--host", "0.0.0.0"], environ={})
    assert "BRIDGE_TOKEN" in str(error.value) and "--allow-no-token" in str(error.value)
    assert parse_settings(["--host", "0.0.0.0", "--token", "x" * 16], environ={}).token == "x" * 16
    assert parse_settings(["--host", "0.0.0.0"], environ={"BRIDGE_ALLOW_NO_TOKEN": "1"}).allow_no_token
    assert parse_settings(["--host", "localhost"], environ={}).loopback


@pytest.mark.parametrize("value", ["yes", "on", "1", "true"])
def test_boolean_variables(value):
    assert parse_settings([], environ={"BRIDGE_ALLOW_NO_TOKEN": value}).allow_no_token


def test_several_triton_endpoints():
    settings = parse_settings(["--triton-url", "a:8001, b:8001,dns:///triton:8001"], environ={})
    assert settings.triton_urls == ["a:8001", "b:8001", "dns:///triton:8001"]
    with pytest.raises(SettingsError):
        parse_settings(["--triton-url", "a:8001,b"], environ={})


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--request-timeout-s", "inf"], ["--request-timeout-s", "BRIDGE_REQUEST_TIMEOUT_S", "'inf'"]),
        (["--max-fps", "nan"], ["--max-fps", "'nan'"]),
        (["--log-level", "bogus"], ["--log-level", "BRIDGE_LOG_LEVEL", "debug"]),
        (["--max-pixels", str(10**9)], ["--max-pixels", "model contract"]),
        (["--max-in-flight", "-1"], ["--max-in-flight"]),
        (["--port", "1.5"], ["--port", "'1.5'"]),
    ],
)
def test_non_finite_and_unknown_values_are_refused(argv, words):
    with pytest.raises(SettingsError) as error:
        parse_settings(argv, environ={})
    for word in words:
        assert word in str(error.value)


def test_building_settings_validates_them():
    """No code path can skip validation: a replace() or a direct build checks too."""
    import dataclasses

    with pytest.raises(SettingsError):
        BridgeSettings(port=0)
    with pytest.raises(SettingsError):
        dataclasses.replace(BridgeSettings(), jpeg_quality=101)


def test_triton_settings_share_the_scheme():
    from depthstream.settings import parse
    from serving.triton import TritonSettings

    env = {"GRPC_PORT": "9001", "MODEL_REPOSITORY": "/models", "TRITON_THREADS": "2"}
    settings = parse(TritonSettings, ["--http-port", "9000"], env)
    assert (settings.http_port, settings.grpc_port, str(settings.repository), settings.threads) == (
        9000,
        9001,
        "/models",
        2,
    )
    with pytest.raises(SettingsError, match="HTTP_PORT, GRPC_PORT and METRICS_PORT"):
        parse(TritonSettings, ["--grpc-port", "8000"], {})
    with pytest.raises(SettingsError, match="--grpc-port / GRPC_PORT"):
        parse(TritonSettings, [], {"GRPC_PORT": "99999"})
