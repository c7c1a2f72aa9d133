"""``python -m client``'s settings: one frozen object, from the command line, then ``CLIENT_*``
variables, then defaults (the shared scheme of depthstream.settings), validated as it is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from depthstream.contract import CHECKPOINTS, DEFAULT_MODEL, MODEL_NAME
from depthstream.render import pointcloud
from depthstream.render.colorize import COLORMAPS, DEFAULT_COLORMAP
from depthstream.settings import Settings, parse, setting


def _one_of(names) -> str:
    return "{" + ",".join(names) + "}"


@dataclass(frozen=True)
class ClientSettings(Settings):
    ENV_PREFIX = "CLIENT_"

    image: Path = setting(positional=True, help="a JPEG, PNG or WebP file; a video; or a folder of images")
    model: str = setting(
        DEFAULT_MODEL,
        metavar="NAME",
        help=f"a served model ({', '.join(CHECKPOINTS)}, ...: python -m export --list)",
    )
    url: str = setting("127.0.0.1:8001", help="Triton's gRPC address")
    colormap: str = setting(DEFAULT_COLORMAP, metavar=_one_of(COLORMAPS))
    output_dir: Path | None = setting(
        None, metavar="DIR", help="one image: where to write (default beside it)"
    )
    ply: Path | None = setting(
        None,
        metavar="DIR",
        help="also write each frame as a coloured point cloud: DIR/NAME.ply and NAME.json (intrinsics)",
    )
    hfov: float | None = setting(
        None,
        metavar="DEG",
        help=(
            "the camera's horizontal field of view for --ply: pins it (default: each frame's own "
            "estimate from a model that has one, such as Depth Anything 3; otherwise "
            f"{pointcloud.DEFAULT_HFOV_DEG:g}, a typical webcam's)"
        ),
    )
    # a video or a folder
    output: Path | None = setting(
        None, help="a video or folder: the depth video (default INPUT.MODEL.mp4) or folder (INPUT.MODEL/)"
    )
    side_by_side: bool = setting(False, help="a video or folder: the input beside its depth")
    raw_dir: Path | None = setting(
        None,
        metavar="DIR",
        help="a video or folder: also each frame's raw depth (16-bit PNG, its range in text chunks)",
    )
    per_frame: bool = setting(
        False,
        help="a video: its depth as the model answers each frame, colours in a range that follows the "
        "frames (default: each frame aligned to the video, one range for the whole video)",
    )
    batch: int | None = setting(
        None, help="a video or folder: frames per request, capped by the model (default: what pays for it)"
    )
    in_flight: int = setting(2, help="a video or folder: requests in flight at once")

    def validate(self) -> None:
        low, high = pointcloud.MIN_HFOV_DEG, pointcloud.MAX_HFOV_DEG
        self.require_all(
            [
                (
                    "model",
                    bool(MODEL_NAME.fullmatch(self.model)),
                    "a model's name (lower case letters, digits and _)",
                ),
                ("colormap", self.colormap in COLORMAPS, f"one of {', '.join(COLORMAPS)}"),
                ("url", bool(self.url.strip()), "Triton's gRPC host:port"),
                ("hfov", self.hfov is None or low <= self.hfov <= high, f"{low:g} to {high:g} degrees"),
                ("batch", self.batch is None or self.batch >= 1, "at least 1"),
                ("in_flight", self.in_flight >= 1, "at least 1"),
            ]
        )


def parse_settings(argv: list[str] | None = None, description: str | None = None) -> ClientSettings:
    return parse(ClientSettings, argv, prog="python -m client", description=description)
