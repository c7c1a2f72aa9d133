"""The bridge's settings: one frozen object, from flags, then ``BRIDGE_*`` variables, then defaults.

Validated once at start-up; a bad value stops the process with a message naming the flag and
the variable.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

from bridge.colorize import COLORMAPS, DEFAULT_COLORMAP
from bridge.contract import DEFAULT_MODEL, MODELS

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class SettingsError(ValueError):
    """A setting is invalid; the message names the flag and the environment variable."""


@dataclass(frozen=True)
class BridgeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    triton_url: str = "127.0.0.1:8001"  # Triton's gRPC endpoint
    default_model: str = DEFAULT_MODEL
    default_colormap: str = DEFAULT_COLORMAP
    jpeg_quality: int = 80
    request_timeout_s: float = 10.0  # per-inference deadline on the gRPC call
    max_message_bytes: int = 4 * 1024 * 1024  # largest WebSocket message
    max_pixels: int = 4096 * 4096  # largest image, checked from its header before decoding
    max_connections: int = 32
    web_dir: Path = WEB_DIR
    log_level: str = "info"

    def validate(self) -> BridgeSettings:
        checks = [
            ("port", 1 <= self.port <= 65535, "a TCP port (1-65535)"),
            ("jpeg_quality", 1 <= self.jpeg_quality <= 100, "between 1 and 100"),
            ("request_timeout_s", self.request_timeout_s > 0, "positive"),
            ("max_message_bytes", self.max_message_bytes >= 1024, "at least 1024"),
            ("max_pixels", self.max_pixels >= 1, "positive"),
            ("max_connections", self.max_connections >= 1, "at least 1"),
            ("default_model", self.default_model in MODELS, f"one of {', '.join(MODELS)}"),
            ("default_colormap", self.default_colormap in COLORMAPS, f"one of {', '.join(COLORMAPS)}"),
            ("triton_url", ":" in self.triton_url and "/" not in self.triton_url, "host:port"),
            ("web_dir", (self.web_dir / "index.html").is_file(), "a directory holding index.html"),
        ]
        for name, ok, requirement in checks:
            if not ok:
                raise SettingsError(
                    f"--{name.replace('_', '-')} / BRIDGE_{name.upper()} must be {requirement}; "
                    f"got {getattr(self, name)!r}"
                )
        return self


def _converter(kind: type):
    if issubclass(kind, Path):
        return Path
    return {int: int, float: float}.get(kind, str)


def parse_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> BridgeSettings:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m bridge", description="depthstream WebSocket bridge")
    values: dict[str, object] = {}
    defaults = BridgeSettings()
    for field in fields(BridgeSettings):
        kind = type(getattr(defaults, field.name))
        variable = f"BRIDGE_{field.name.upper()}"
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            default=None,
            help=f"(env {variable}, default {getattr(defaults, field.name)})",
        )
        values[field.name] = (variable, _converter(kind))
    args = parser.parse_args(argv)
    chosen = {}
    for name, (variable, convert) in values.items():
        raw = getattr(args, name)
        if raw is None:
            raw = environ.get(variable)
        if raw is None:
            continue
        try:
            chosen[name] = convert(raw)
        except ValueError:
            raise SettingsError(f"--{name.replace('_', '-')} / {variable}: cannot read {raw!r}") from None
    return BridgeSettings(**chosen).validate()
