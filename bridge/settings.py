"""The bridge's settings: one frozen object, from flags, then ``BRIDGE_*`` variables, then
defaults (the shared scheme of depthstream.settings), validated as it is built."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from depthstream.contract import CHECKPOINTS, MAX_IMAGE_PIXELS, MODEL_NAME
from depthstream.render.colorize import COLORMAPS, DEFAULT_COLORMAP
from depthstream.request import shared_layout
from depthstream.settings import Settings, SettingsError, parse, setting

__all__ = ["BridgeSettings", "SettingsError", "parse_settings"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class SharedMemoryMode(StrEnum):
    AUTO = "auto"  # try it with a Triton on this host
    OFF = "off"  # plain gRPC always


class LogLevel(StrEnum):  # uvicorn's names
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"


@dataclass(frozen=True)
class BridgeSettings(Settings):
    ENV_PREFIX = "BRIDGE_"
    SECRETS = frozenset({"token", "triton_shm_key", "triton_admin_key"})

    host: str = setting("127.0.0.1", help="address to bind; off loopback a token is required (see --token)")
    port: int = setting(8080, help="port of the page, /ws and the API")
    triton_url: str = setting("127.0.0.1:8001", help="Triton's gRPC endpoint(s), comma-separated")
    default_model: str = setting(
        "auto",
        help="the model a stream starts on; auto: the most accurate one that runs live on the serving "
        "machine, judged from the speeds recorded with the models (bridge/default_model.py)",
    )
    default_colormap: str = setting(DEFAULT_COLORMAP, help="a stream's colormap until it chooses one")
    jpeg_quality: int = setting(80, help="quality of the colour JPEG answers (1-100)")
    steady: bool = setting(
        True,
        help='a stream\'s relative depth aligned frame to frame unless its config says "steady": false',
    )
    request_timeout_s: float = setting(10.0, help="a frame's deadline, from its arrival to its answer")
    max_message_bytes: int = setting(4 * 1024 * 1024, help="largest WebSocket message")
    max_pixels: int = setting(MAX_IMAGE_PIXELS, help="largest image, checked from its header before decoding")
    max_connections: int = setting(32, help="streams at once; more are refused with busy (1013)")
    max_in_flight: int = setting(
        0,
        help="requests in flight to each Triton endpoint; more frames wait in the bridge, where the latest "
        "replaces a stale one. 0: the served model's instances (x its batch when batching)",
    )
    triton_shm: SharedMemoryMode = setting(
        SharedMemoryMode.AUTO,
        help="frames to a Triton on this host through system shared memory instead of the gRPC "
        "message (plain gRPC where Triton refuses); auto: try it; off: never",
    )
    triton_shm_key: str = setting("", help="Triton's key for its restricted shared-memory protocol, if set")
    triton_admin_key: str = setting(
        "",
        help="Triton's admin key, read only for its repository index (which lists failed models too); "
        "without it the bridge lists the models Triton has loaded",
    )
    max_fps: float = setting(30.0, help="frames per second per connection; more are dropped and counted")
    max_controls_per_s: float = setting(
        5.0,
        help="control (config) messages per second per connection; more are refused and counted (a model "
        "switch costs Triton up to three metadata calls)",
    )
    send_timeout_s: float = setting(10.0, help="a client that reads nothing for this long is disconnected")
    drain_timeout_s: float = setting(5.0, help="on SIGTERM: time for in-flight frames before closing (1001)")
    allowed_origins: str = setting(
        "", help="origins (comma-separated) whose pages may use the stream besides this server's own"
    )
    token: str = setting("", help="access token for /ws and /api/*; required off loopback")
    allow_no_token: bool = setting(False, help="explicitly serve a non-loopback address without a token")
    web_dir: Path = setting(WEB_DIR, help="the page's files")
    log_level: LogLevel = setting(LogLevel.INFO, help="how much the bridge and uvicorn log")

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip())

    @property
    def triton_urls(self) -> list[str]:
        return [url.strip() for url in self.triton_url.split(",") if url.strip()]

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.host)

    def shared_memory_for(self, url: str) -> tuple[int, str] | None:
        """(bytes of a region for the largest frame taken, Triton's key) for a Triton on this
        host; None: plain gRPC (another host cannot map this host's memory)."""
        host = url.removeprefix("dns:///").rpartition(":")[0].strip("[]")
        if self.triton_shm == SharedMemoryMode.OFF or not _is_loopback(host):
            return None
        return sum(shared_layout((1, self.max_pixels, 1))), self.triton_shm_key

    def validate(self) -> None:
        self.require_all(
            [
                ("host", bool(self.host.strip()), "a host name or address"),
                ("port", 1 <= self.port <= 65535, "a TCP port (1-65535)"),
                ("jpeg_quality", 1 <= self.jpeg_quality <= 100, "between 1 and 100"),
                ("request_timeout_s", self.request_timeout_s > 0, "positive"),
                ("max_message_bytes", self.max_message_bytes >= 1024, "at least 1024"),
                (
                    "max_pixels",
                    1 <= self.max_pixels <= MAX_IMAGE_PIXELS,
                    f"positive and at most the model contract's {MAX_IMAGE_PIXELS}",
                ),
                ("max_connections", self.max_connections >= 1, "at least 1"),
                ("max_in_flight", self.max_in_flight >= 0, "0 (from the model's config) or more"),
                (
                    "default_model",
                    self.default_model == "auto" or bool(MODEL_NAME.fullmatch(self.default_model)),
                    f"auto or a served model's name, such as {', '.join(CHECKPOINTS)}",
                ),
                ("default_colormap", self.default_colormap in COLORMAPS, f"one of {', '.join(COLORMAPS)}"),
                (
                    "triton_url",
                    bool(self.triton_urls) and all(_endpoint_ok(u) for u in self.triton_urls),
                    "host:port (or dns:///name:port), or several separated by commas",
                ),
                ("web_dir", _holds_page(self.web_dir), "a directory holding index.html"),
                (
                    "triton_shm",
                    self.triton_shm in tuple(SharedMemoryMode),  # a str given in code is checked too
                    f"one of {', '.join(SharedMemoryMode)}",
                ),
                ("max_fps", self.max_fps > 0, "positive"),
                ("max_controls_per_s", self.max_controls_per_s > 0, "positive"),
                ("send_timeout_s", self.send_timeout_s > 0, "positive"),
                ("drain_timeout_s", self.drain_timeout_s >= 0, "zero or more"),
                (
                    "allowed_origins",
                    all(o.startswith(("http://", "https://")) for o in self.origins),
                    "comma-separated origins like https://depth.example.com",
                ),
                ("token", not self.token or len(self.token) >= 16, "at least 16 characters"),
                ("log_level", self.log_level in tuple(LogLevel), f"one of {', '.join(LogLevel)}"),
            ]
        )
        if not self.loopback and not self.token and not self.allow_no_token:
            raise SettingsError(
                f"--host {self.host} serves other machines: set an access token with --token / "
                "BRIDGE_TOKEN, or disable it explicitly with --allow-no-token / BRIDGE_ALLOW_NO_TOKEN=1"
            )


def _is_loopback(host: str) -> bool:
    """A loopback address or localhost, never a name that merely starts like one."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint_ok(url: str) -> bool:
    host, _, port = url.removeprefix("dns:///").rpartition(":")
    return bool(host) and "/" not in host and port.isdigit() and 0 < int(port) < 65536


def _holds_page(directory: Path) -> bool:
    """False too for a path the system cannot even look up (found by fuzzing: a name too long
    ended start-up in a traceback)."""
    try:
        return (directory / "index.html").is_file()
    except OSError:
        return False


def parse_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> BridgeSettings:
    return parse(
        BridgeSettings, argv, environ, prog="python -m bridge", description="depthstream WebSocket bridge"
    )
