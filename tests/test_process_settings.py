"""Every other process's settings share the bridge's scheme (depthstream/settings.py): a frozen
object, flags beat variables beat defaults, choices are checked, bad values name both the flag
and the variable, and a bad value stops the command with that message (exit 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.soak import SoakSettings
from bench.worst_case import WorstCaseSettings
from client.settings import ClientSettings
from demo.__main__ import DemoSettings
from depthstream.settings import SettingsError, parse, parse_known
from export.settings import ExportSettings, Int8Choice

# per process: (settings, the command line it needs, (field, variable's text, value), a bad value)
PROCESSES = {
    "export": (ExportSettings, [], ("int8", "never", Int8Choice.NEVER), ("--engine", "tensorrt")),
    "client": (ClientSettings, ["photo.jpg"], ("in_flight", "4", 4), ("--hfov", "500")),
    "soak": (SoakSettings, [], ("clients", "3", 3), ("--fps", "0")),
    "worst_case": (WorstCaseSettings, [], ("quick", "yes", True), None),
    "demo": (DemoSettings, [], ("repository", "/models", Path("/models")), None),
}


@pytest.mark.parametrize("process", PROCESSES)
def test_defaults_are_valid_frozen_and_variables_then_flags(process):
    cls, needed, (name, text, value), _ = PROCESSES[process]
    settings = parse(cls, needed, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(settings, name, value)
    variable = cls.variable(name)
    assert getattr(parse(cls, needed, {variable: text}), name) == value
    default = getattr(settings, name)
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool):
        assert getattr(parse(cls, [*needed, f"--no-{flag[2:]}"], {variable: text}), name) is False
    elif name in {f.name for f in dataclasses.fields(cls) if f.metadata.get("flag", True)}:
        shown = default.value if isinstance(default, Int8Choice) else str(default)
        assert getattr(parse(cls, [*needed, flag, shown], {variable: text}), name) == default


@pytest.mark.parametrize("process", [p for p, entry in PROCESSES.items() if entry[3] is not None])
def test_a_bad_value_names_the_flag_and_the_variable(process):
    cls, needed, _, (flag, bad) = PROCESSES[process]
    variable = cls.variable(flag[2:].replace("-", "_"))
    for argv, env in (([*needed, flag, bad], {}), (needed, {variable: bad})):
        with pytest.raises(SettingsError, match=f"{flag} / {variable}"):
            parse(cls, argv, env)


def test_a_boolean_variable_must_say_yes_or_no():
    with pytest.raises(SettingsError, match="--quick / WORST_CASE_QUICK: cannot read 'maybe'"):
        parse(WorstCaseSettings, [], {"WORST_CASE_QUICK": "maybe"})


def test_export_choices_lists_and_exclusions():
    settings = parse(ExportSettings, ["--only", "depth_anything_v2_small_252, depth_anything_v2_small"], {})
    assert settings.only == ("depth_anything_v2_small_252", "depth_anything_v2_small")
    with pytest.raises(SettingsError, match="must be one of auto, always, never; got 'sometimes'"):
        parse(ExportSettings, [], {"EXPORT_INT8": "sometimes"})
    with pytest.raises(SettingsError, match="not twins"):
        parse(ExportSettings, ["--only", "depth_anything_v2_small_int8"], {})
    with pytest.raises(SettingsError, match="name it with --model"):
        parse(ExportSettings, ["--weights", "/tmp"], {})
    with pytest.raises(SettingsError, match="exclude each other"):
        parse(
            ExportSettings, ["--model", "depth_anything_v2_small", "--weights", "/w", "--random-weights"], {}
        )


def test_the_client_needs_its_image_and_takes_no_variable_for_it():
    with pytest.raises(SystemExit):
        parse(ClientSettings, [], {"CLIENT_IMAGE": "photo.jpg"})
    assert parse(ClientSettings, ["a.jpg", "--batch", "2"], {}).batch == 2
    with pytest.raises(SettingsError, match="--batch / CLIENT_BATCH must be at least 1"):
        parse(ClientSettings, ["a.jpg", "--batch", "0"], {})


def test_the_demo_leaves_the_bridges_flags_to_the_bridge():
    settings, rest = parse_known(DemoSettings, ["--repository", "/m", "--port", "9000"], {})
    assert settings.repository == Path("/m") and rest == ["--port", "9000"]
    env = {"DEMO_EXPORT_ARGS": "--model depth_anything_v2_small --int8 never"}
    assert parse(DemoSettings, [], env).export_argv == [
        "--model",
        "depth_anything_v2_small",
        "--int8",
        "never",
    ]
    with pytest.raises(SettingsError, match="^DEMO_EXPORT_ARGS must be"):
        parse(DemoSettings, [], {"DEMO_EXPORT_ARGS": '--model "x'})
    with pytest.raises(SystemExit):  # an environment-only setting has no flag
        parse(DemoSettings, ["--export-args", "x"], {})


@pytest.mark.parametrize(
    "module,argv",
    [
        ("export", ["--int8", "sometimes"]),
        ("client", ["x.jpg", "--in-flight", "0"]),
        ("demo", ["--port", "0"]),
    ],
)
def test_a_bad_value_stops_the_command_with_exit_2(module, argv, capsys):
    import importlib

    main = importlib.import_module(f"{module}.__main__").main
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err
