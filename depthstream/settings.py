"""One settings scheme for every process (bridge, embedded Triton, demo, bench).

A process's settings are one frozen dataclass. Each field is read from its flag, then its
environment variable, then its default; the object validates itself when it is built
(``__post_init__``), so no code path can skip validation, and a bad value stops the process
with a message naming both the flag and the variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

TRUE, FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off", ""})

S = TypeVar("S", bound="Settings")


class SettingsError(ValueError):
    """A setting is invalid; the message names the flag and the environment variable."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    env: str | None = None,
    help: str = "",
    flag: bool = True,
    positional: bool = False,
    metavar: str | None = None,
    option: str | None = None,
    **kw,
):
    """A settings field: ``env`` overrides the variable's name (default: prefix + NAME);
    ``flag=False`` keeps it off the command line and out of the environment; ``positional``
    makes it a required argument of the command line (no variable); ``option`` names its flag
    where the field's name cannot be the flag's (``list`` would shadow the builtin)."""
    metadata = {
        "env": env,
        "help": help,
        "flag": flag,
        "positional": positional,
        "metavar": metavar,
        "option": option,
    }
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


class Settings:
    """Base of every process's settings dataclass (``@dataclass(frozen=True)`` subclasses)."""

    ENV_PREFIX: ClassVar[str] = ""
    SECRETS: ClassVar[frozenset[str]] = frozenset()  # never echoed in an error

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Override: raise SettingsError (``self.require``) for a bad value."""

    def require(self, name: str, ok: bool, requirement: str) -> None:
        if not ok:
            value = getattr(self, name)
            shown = f"a value of {len(str(value))} characters" if name in self.SECRETS else repr(value)
            raise SettingsError(f"{self.describe(name)} must be {requirement}; got {shown}")

    def require_all(self, checks: Iterable[tuple[str, bool, str]]) -> None:
        for name, ok, requirement in checks:
            self.require(name, ok, requirement)

    @classmethod
    def variable(cls, name: str) -> str:
        field = next(f for f in dataclasses.fields(typing.cast(Any, cls)) if f.name == name)
        return field.metadata.get("env") or f"{cls.ENV_PREFIX}{name.upper()}"

    @classmethod
    def describe(cls, name: str) -> str:
        field = next(f for f in dataclasses.fields(typing.cast(Any, cls)) if f.name == name)
        if not field.metadata.get("flag", True):  # read from its variable only
            return cls.variable(name)
        return f"{_option(field)} / {cls.variable(name)}"


def _option(field: dataclasses.Field) -> str:
    return field.metadata.get("option") or f"--{field.name.replace('_', '-')}"


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in TRUE | FALSE:
        raise ValueError(text)
    return value in TRUE


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _integer(text: str) -> int:
    return int(text.strip())


def _is_choice(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.Enum)


def _converter(kind: Any) -> Callable[[str], Any]:
    """str -> the field's type (bool, int, float, Path, str, an enum of choices,
    tuple[str, ...], X | None)."""
    if _is_choice(kind):
        return lambda text: kind(text.strip())
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (inner,) = [a for a in typing.get_args(kind) if a is not type(None)]
        convert = _converter(inner)
        return lambda text: None if text.strip() == "" else convert(text)
    if typing.get_origin(kind) is tuple:
        return lambda text: tuple(part.strip() for part in text.split(",") if part.strip())
    if kind is bool:
        return _boolean
    if kind is int:
        return _integer
    if kind is float:
        return _finite_float
    if kind is Path:
        return Path
    return str


def _arguments(cls: type[S], parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(typing.cast(Any, cls)):
        if not field.metadata.get("flag", True):
            continue
        kind = hints[field.name]
        help_text = field.metadata.get("help", "")
        metavar = field.metadata.get("metavar")
        if _is_choice(kind):
            metavar = metavar or "{" + ",".join(choice.value for choice in kind) + "}"
        if field.metadata.get("positional"):
            parser.add_argument(field.name, metavar=metavar or field.name.upper(), help=help_text)
            continue
        default = field.default if field.default is not dataclasses.MISSING else "(generated)"
        shown = default.value if isinstance(default, enum.Enum) else default
        shown = str(shown) if isinstance(shown, Path) else shown
        help_text = f"{help_text} (env {cls.variable(field.name)}, default {shown!r})".strip()
        flag = _option(field)
        if kind is bool:  # --name turns it on, --no-name off
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=field.name, default=None, metavar=metavar, help=help_text)


def _build(cls: type[S], args: argparse.Namespace, environ: Mapping[str, str]) -> S:
    hints = typing.get_type_hints(cls)
    chosen: dict[str, Any] = {}
    for field in dataclasses.fields(typing.cast(Any, cls)):
        # a setting without a flag (a secret) still reads its variable; a positional has none
        raw = getattr(args, field.name, None)
        if raw is None and not field.metadata.get("positional"):
            raw = environ.get(cls.variable(field.name))
        if raw is None:
            continue
        if isinstance(raw, bool):  # a flag
            chosen[field.name] = raw
            continue
        kind = hints[field.name]
        if not isinstance(raw, str):  # argparse gives [] for "--flag=--" (found by fuzzing)
            raise SettingsError(f"{cls.describe(field.name)}: cannot read {raw!r}")
        try:
            chosen[field.name] = _converter(kind)(raw)
        except ValueError:
            if _is_choice(kind):
                choices = ", ".join(choice.value for choice in kind)
                raise SettingsError(
                    f"{cls.describe(field.name)} must be one of {choices}; got {raw!r}"
                ) from None
            raise SettingsError(f"{cls.describe(field.name)}: cannot read {raw!r}") from None
    return cls(**chosen)


def parse(
    cls: type[S],
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str | None = None,
    description: str | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> S:
    """Build ``cls`` from flags, then variables, then defaults (validated as it is built)."""
    parser = parser or argparse.ArgumentParser(prog=prog, description=description)
    _arguments(cls, parser)
    return _build(cls, parser.parse_args(argv), os.environ if environ is None else environ)


def parse_known(
    cls: type[S],
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> tuple[S, list[str]]:
    """As ``parse``, leaving the flags that are not ``cls``'s to the caller (for another process)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    _arguments(cls, parser)
    args, rest = parser.parse_known_args(argv)
    return _build(cls, args, os.environ if environ is None else environ), rest
