"""The bridge's settings: one frozen object, from flags, then ``BRIDGE_*`` variables, then
defaults (the shared scheme of depthstream.settings), validated as it is built."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from depthstream.contract import CHECKPOINTS, MAX_IMAGE_PIXELS, MODEL_NAME
from depthstream.render.colorize import COLORMAPS, DEFAULT_COLORMAP
from depthstream.request import shared_layout
from depthstream.settings import Settings, SettingsError, parse

__all__ = ["BridgeSettings", "SettingsError", "parse_settings"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
SHARED_MEMORY_MODES = ("auto", "off")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(frozen=True)
class BridgeSettings(Settings):
    ENV_PREFIX = "BRIDGE_"
    SECRETS = frozenset({"token", "triton_shm_key", "triton_admin_key"})

    host: str = "127.0.0.1"
    port: int = 8080
    triton_url: str = "127.0.0.1:8001"  # Triton's gRPC endpoint(s), comma-separated
    # the model a stream starts on; auto: the most accurate one that runs live on the serving
    # machine, judged from the speeds recorded with the models (bridge/default_model.py)
    default_model: str = "auto"
    default_colormap: str = DEFAULT_COLORMAP
    jpeg_quality: int = 80
    # a stream's relative depth aligned frame to frame (depthstream/render/steady.py) unless its
    # config says "steady": false
    steady: bool = True
    request_timeout_s: float = 10.0  # per-inference deadline on the gRPC call
    max_message_bytes: int = 4 * 1024 * 1024  # largest WebSocket message
    max_pixels: int = MAX_IMAGE_PIXELS  # largest image, checked from its header before decoding
    max_connections: int = 32
    # requests in flight to each Triton endpoint; more frames wait in the bridge, where the
    # latest replaces a stale one. 0: the served model's instances (x its batch when batching)
    max_in_flight: int = 0
    # frames to a Triton on this host (a loopback triton_url) through system shared memory
    # instead of the gRPC message (bridge/shared_memory.py); plain gRPC where Triton refuses.
    # auto: try it; off: never
    triton_shm: str = "auto"
    triton_shm_key: str = ""  # Triton's key for its restricted shared-memory protocol, if set
    # Triton's admin key, read only for its repository index (which lists failed models too);
    # without it the bridge lists the models Triton has loaded (bridge/triton.py served_names)
    triton_admin_key: str = ""
    max_fps: float = 30.0  # frames per second per connection; more are dropped and counted
    # control (config) messages per second per connection; more are refused and counted: a model
    # switch costs Triton up to three metadata calls (cached per endpoint for a second)
    max_controls_per_s: float = 5.0
    send_timeout_s: float = 10.0  # a client that reads nothing for this long is disconnected
    drain_timeout_s: float = 5.0  # on SIGTERM: time for in-flight frames before closing (1001)
    # Browsers' Origin header must be this server or one of these (comma-separated origins).
    allowed_origins: str = ""
    token: str = ""  # access token for /ws and /api/*; required off loopback (see validate)
    allow_no_token: bool = False  # explicitly serve a non-loopback address without a token
    web_dir: Path = WEB_DIR
    log_level: str = "info"

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
        if self.triton_shm == "off" or not _is_loopback(host):
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
                    self.triton_shm in SHARED_MEMORY_MODES,
                    f"one of {', '.join(SHARED_MEMORY_MODES)}",
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
                ("log_level", self.log_level in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
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
