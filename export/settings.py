"""``python -m export``'s settings: one frozen object, from flags, then ``EXPORT_*`` variables,
then defaults (the shared scheme of depthstream.settings), validated as it is built."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from depthstream.contract import EXPORTABLE, MODEL_NAME, MODELS, DepthKind
from depthstream.engines import ENGINE_CHOICES
from depthstream.settings import Settings, SettingsError, parse, setting

ALL = "all"


class Int8Choice(enum.StrEnum):
    AUTO = "auto"  # built, judged with the other twins
    ALWAYS = "always"  # kept when faithful, faster or not
    NEVER = "never"  # not built


def servable_models() -> list[str]:
    """What ``--only`` may name: the contract's models, not their twins."""
    return [spec.name for spec in MODELS.values() if not spec.is_twin]


@dataclass(frozen=True)
class ExportSettings(Settings):
    ENV_PREFIX = "EXPORT_"

    model: str = setting(
        ALL,
        metavar="{" + ",".join([*EXPORTABLE, ALL]) + "}",
        help="which checkpoint to export, with its presets (all: relative and metric)",
    )
    weights: Path | None = setting(
        None, metavar="DIR", help="local checkpoint directory (save_pretrained layout), for one --model"
    )
    checkpoint: str | None = setting(
        None,
        metavar="ID_OR_DIR",
        help="export this transformers depth checkpoint instead of the curated ones: a hub id or a "
        "save_pretrained directory with its image processor config",
    )
    name: str | None = setting(None, help="the served name of --checkpoint's model (default: from its id)")
    depth: DepthKind | None = setting(
        None,
        metavar="{relative,metric}",
        help="what --checkpoint's depth means, where its family does not say (relative or metric)",
    )
    max_depth: float | None = setting(None, metavar="M", help="--checkpoint's metric ceiling, in metres")
    remove: str | None = setting(
        None, metavar="NAME", help="take a model and its twins out of the repository"
    )
    listing: bool = setting(
        False, option="--list", env="EXPORT_LIST", help="say what the repository serves, and stop"
    )
    random_weights: bool = setting(
        False, help="smoke mode: real architectures with random weights, MEANINGLESS output"
    )
    output: Path = setting(Path("model_repository"), metavar="DIR", help="Triton model repository to write")
    force: bool = setting(False, help="re-export models that are up to date")
    int8: Int8Choice = setting(
        Int8Choice.AUTO,
        help="the INT8 candidate twin: judged with the others (auto), kept when faithful (always), "
        "or never built",
    )
    engine: str = setting(
        "auto",
        metavar="{" + ",".join(ENGINE_CHOICES) + "}",
        help="what serves each FP32 model: the faster here, measured (auto), onnxruntime or openvino",
    )
    only: tuple[str, ...] = setting(
        (),
        metavar="NAME[,NAME]",
        help="only these models of the checkpoints asked, without their twins (make demo's first "
        "depth: the rest follows)",
    )
    first: bool = setting(
        False,
        help="only the fastest model of the checkpoints asked (relative depth first), without twins: "
        "what make demo serves at once, the rest following",
    )
    brief: bool = setting(False, help="one line instead of the table when every model is up to date")
    verbose: bool = setting(False, help="show the libraries' own logs (quantizer, tracer, ONNX Runtime)")

    def validate(self) -> None:
        unknown = sorted(set(self.only) - set(servable_models()))
        self.require_all(
            [
                ("model", self.model in (*EXPORTABLE, ALL), f"one of {', '.join([*EXPORTABLE, ALL])}"),
                ("engine", self.engine in ENGINE_CHOICES, f"one of {', '.join(ENGINE_CHOICES)}"),
                ("only", not unknown, f"models of the contract, not twins (not {', '.join(unknown)})"),
            ]
        )
        if self.weights is not None and self.model == ALL:
            raise SettingsError(f"{self.describe('weights')} holds one checkpoint: name it with --model")
        if self.weights is not None and self.random_weights:
            raise SettingsError("--weights and --random-weights exclude each other")
        if self.checkpoint is None and (self.name, self.depth, self.max_depth) != (None, None, None):
            raise SettingsError("--name, --depth and --max-depth describe a --checkpoint")
        if self.checkpoint is not None and (
            self.weights is not None or self.random_weights or self.model != ALL
        ):
            raise SettingsError(
                "--checkpoint names its own weights: not with --model, --weights or --random-weights"
            )
        if self.remove is not None and self.checkpoint is not None:
            raise SettingsError("--remove and --checkpoint: one at a time (each leaves the repository whole)")
        if self.name is not None and not MODEL_NAME.fullmatch(self.name):
            raise SettingsError(f"{self.describe('name')}: lower case letters, digits and _, at most 63")
        if self.max_depth is not None and self.max_depth <= 0:
            raise SettingsError(f"{self.describe('max_depth')}: metres, above 0")

    @property
    def checkpoints(self) -> list[str]:
        return list(EXPORTABLE) if self.model == ALL else [self.model]


def parse_settings(
    argv: list[str] | None = None, environ: dict[str, str] | None = None, description: str | None = None
) -> ExportSettings:
    return parse(ExportSettings, argv, environ, prog="python -m export", description=description)
