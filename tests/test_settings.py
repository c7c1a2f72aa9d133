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
        (["--default-model", "Res/Net"], {}, ["depth_anything_v2_small"]),
        (["--default-colormap", "jet3"], {}, ["inferno"]),
        (["--triton-url", "http://x/y"], {}, ["host:port"]),
        (["--request-timeout-s", "-1"], {}, ["positive"]),
        (["--web-dir", "/nonexistent"], {}, ["index.html"]),
        (["--jpeg-quality=--"], {}, ["--jpeg-quality", "cannot read"]),  # argparse's [] (fuzzing)
        (["--web-dir", "x" * 5000], {}, ["--web-dir", "index.html"]),  # too long to look up (fuzzing)
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


def test_closed_choices_are_their_enums_and_a_wrong_one_is_refused_however_it_comes():
    from bridge.settings import LogLevel, SharedMemoryMode

    parsed = parse_settings(["--triton-shm", "off"], environ={"BRIDGE_LOG_LEVEL": "debug"})
    assert parsed.triton_shm is SharedMemoryMode.OFF and parsed.log_level is LogLevel.DEBUG
    with pytest.raises(SettingsError, match="--log-level / BRIDGE_LOG_LEVEL must be one of"):
        BridgeSettings(log_level="loud")  # type: ignore[arg-type]  (a str given in code)
    with pytest.raises(SettingsError, match="--triton-shm"):
        BridgeSettings(triton_shm="sometimes")  # type: ignore[arg-type]


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


# a valid value other than the default for every bridge setting
OTHER_VALUES = {
    "host": ("localhost", "localhost"),
    "port": ("9100", 9100),
    "triton_url": ("triton:9001", "triton:9001"),
    "triton_shm": ("off", "off"),
    "triton_shm_key": ("k" * 32, "k" * 32),
    "triton_admin_key": ("a" * 32, "a" * 32),
    "default_model": ("midas_dpt_beit_base_384", "midas_dpt_beit_base_384"),
    "default_colormap": ("turbo", "turbo"),
    "jpeg_quality": ("70", 70),
    "request_timeout_s": ("3.5", 3.5),
    "max_message_bytes": ("2048", 2048),
    "max_pixels": ("1000", 1000),
    "max_connections": ("3", 3),
    "max_in_flight": ("2", 2),
    "max_fps": ("5", 5.0),
    "max_controls_per_s": ("2", 2.0),
    "send_timeout_s": ("4", 4.0),
    "drain_timeout_s": ("1", 1.0),
    "allowed_origins": ("https://a.example", "https://a.example"),
    "token": ("x" * 16, "x" * 16),
    "allow_no_token": ("1", True),
    "steady": ("false", False),
    "log_level": ("debug", "debug"),
}


def test_the_table_covers_every_setting():
    import dataclasses

    assert set(OTHER_VALUES) | {"web_dir"} == {f.name for f in dataclasses.fields(BridgeSettings)}


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_every_variable_is_honoured_and_its_flag_wins(name):
    raw, value = OTHER_VALUES[name]
    variable = BridgeSettings.variable(name)
    assert getattr(parse_settings([], environ={variable: raw}), name) == value
    default = getattr(BridgeSettings(), name)
    flag = f"--{name.replace('_', '-')}"
    # a boolean: --name or --no-name, whatever the variable says
    argv = [flag if default else f"--no-{flag[2:]}"] if isinstance(default, bool) else [flag, str(default)]
    assert getattr(parse_settings(argv, environ={variable: raw}), name) == default, "the flag wins"


@pytest.mark.parametrize(
    "name,bad",
    [
        (name, bad)
        for name, bads in {
            "port": ["http", "0", "-1", "65536", "", "1e3"],
            "jpeg_quality": ["0", "101", "nan", ""],
            "request_timeout_s": ["0", "-1", "inf", "-inf", "nan", "soon"],
            "max_message_bytes": ["0", "100", "x"],
            "max_pixels": ["0", "-5", "99999999999"],
            "max_connections": ["0", "-1"],
            "max_in_flight": ["-1", "one"],
            "max_fps": ["0", "nan", "inf"],
            "max_controls_per_s": ["0", "-1"],
            "send_timeout_s": ["0", "inf"],
            "drain_timeout_s": ["-1", "nan"],
            "default_model": ["", "Res/Net", "a" * 64],
            "default_colormap": ["", "jet3"],
            "triton_url": ["", "nohost", "a:b", "a:70000"],
            "log_level": ["", "verbose", "bogus"],
            "allow_no_token": ["maybe"],
            "token": ["short"],
            "host": [""],
        }.items()
        for bad in bads
    ],
)
def test_every_bad_value_is_refused_naming_the_flag_and_the_variable(name, bad):
    variable = BridgeSettings.variable(name)
    for argv, environ in (([f"--{name.replace('_', '-')}={bad}"], {}), ([], {variable: bad})):
        if argv and (bad == "" or isinstance(getattr(BridgeSettings(), name), bool)):
            continue  # an empty flag value is the variable's case; a boolean flag takes no value
        with pytest.raises(SettingsError) as error:
            parse_settings(argv, environ=environ)
        assert f"--{name.replace('_', '-')}" in str(error.value) and variable in str(error.value)


def test_a_rejected_secret_is_not_echoed():
    from depthstream.settings import SettingsError

    with pytest.raises(SettingsError) as error:
        BridgeSettings(token="short-secret").validate()
    assert "short-secret" not in str(error.value) and "a value of 12 characters" in str(error.value)


def test_make_serve_and_make_bridge_can_share_a_shared_memory_key_through_variables():
    """The embedded Triton's shared-memory key has no flag (ps would show it) but reads
    TRITON_SHM_KEY, so `TRITON_SHM_KEY=k make serve` and `BRIDGE_TRITON_SHM_KEY=k make bridge`
    agree; unset, it is random per start."""
    from depthstream.settings import parse
    from serving.triton import TritonSettings

    key = "s" * 32
    assert parse(TritonSettings, [], environ={"TRITON_SHM_KEY": key}).shm_key == key
    assert parse(TritonSettings, [], environ={}).shm_key != parse(TritonSettings, [], environ={}).shm_key
    assert parse_settings([], environ={"BRIDGE_TRITON_SHM_KEY": key}).triton_shm_key == key
