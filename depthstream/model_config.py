"""A Triton model repository as every part reads it: the layout, and ``config.pbtxt`` parsed and
written with Triton's own protobuf (``tritonclient.grpc.model_config_pb2``), exactly as Triton
parses it."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from depthstream.contract import MODELS, RANDOM_WEIGHTS_MARKER, ModelSpec, Precision, register

CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"
VERSION = "1"
MANIFEST = "depthstream.json"  # what a model was exported from, and the parity measured


def parse(text: str) -> mc.ModelConfig:
    """Parse a config.pbtxt exactly as Triton does."""
    return text_format.Parse(text, mc.ModelConfig())


def to_text(config: mc.ModelConfig, header: str = "") -> str:
    return header + text_format.MessageToString(config)


def is_random_weights(config: mc.ModelConfig) -> bool:
    """Whether the export recorded meaningless random weights (smoke mode) in this config."""
    param = config.parameters.get(RANDOM_WEIGHTS_MARKER)
    return param is not None and param.string_value == "true"


# Written into the served (embedded) config by serving.repository, read by the bridge: this
# model's speed on the machine that serves it (depthstream.runtime measures it).
MS_PER_FRAME_PARAM = "depthstream_ms_per_frame"
# Written by the export from the contract: what DEPTH means (depth_kind, depth_units, ...).
DEPTH_PARAM_PREFIX = "depth_"
MEASURED_ON_PARAM = "depthstream_speed_measured_on"
# Written by the export: the whole spec (the repository is the catalog), and a few of its fields
# for a person reading the config (title, source, revision, twin_of, added, network_size,
# intrinsics)
SPEC_PARAM = "depthstream_spec"


def spec_params(spec: ModelSpec) -> dict[str, str]:
    """What the export writes about a model into its config's parameters."""
    return {
        SPEC_PARAM: spec.to_json(),
        "title": spec.title,
        "source": spec.hub_id,
        "revision": spec.revision,
        "twin_of": spec.fp32_twin if spec.is_twin else "",
        "added": "true" if spec.added else "false",
        "network_size": spec.resize.describe(),
        "intrinsics": "true" if spec.intrinsics else "false",  # it returns INTRINSICS (its camera)
    }


def spec_of(config: mc.ModelConfig) -> ModelSpec:
    """The model's spec as its config records it; a config written before the export recorded
    it names a curated model. ValueError says what is wrong."""
    if SPEC_PARAM not in config.parameters:
        if config.name in MODELS:
            return MODELS[config.name]
        raise ValueError(f"{config.name}: its config records no {SPEC_PARAM}; export it again")
    spec = ModelSpec.from_json(config.parameters[SPEC_PARAM].string_value)
    if spec.name != config.name:
        raise ValueError(f"{config.name}: its config records the spec of {spec.name}")
    return spec


def precision_of(model_dir: Path) -> Precision:
    """A model's precision as its config records it (FP32 where it records none: a staging
    directory, or a model exported before the spec was recorded and not curated)."""
    try:
        spec = spec_of(parse((model_dir / CONFIG_FILE).read_text()))
        if spec.name == model_dir.name:  # Triton serves a model under its directory's name
            return spec.precision
    except (OSError, ValueError, text_format.ParseError):
        pass
    curated = MODELS.get(model_dir.name)
    return curated.precision if curated is not None else Precision.FP32


def register_repository(repository: Path) -> dict[str, str]:
    """Make the models of a repository on disk known to this process; {name: problem} for those
    whose config cannot be read."""
    problems = {}
    for name in exported_models(repository):
        try:
            register(spec_of(parse((repository / name / CONFIG_FILE).read_text())))
        except (OSError, ValueError, text_format.ParseError) as exc:
            problems[name] = str(exc)
    return problems


def served_speed(config: mc.ModelConfig) -> tuple[float, str] | None:
    """(ms per 640x480 frame, where it was measured) as the serving machine recorded it, or None."""
    if MS_PER_FRAME_PARAM not in config.parameters:  # indexing a protobuf map would insert it
        return None
    try:
        ms = float(config.parameters[MS_PER_FRAME_PARAM].string_value)
    except ValueError:
        return None
    machine = (
        config.parameters[MEASURED_ON_PARAM].string_value if MEASURED_ON_PARAM in config.parameters else ""
    )
    return (ms, machine) if ms > 0 else None


def tensors(config: mc.ModelConfig) -> tuple[list, list]:
    """A config's inputs and outputs in the contract's form (Triton datatype, batch dim first)."""
    batch = (-1,) if config.max_batch_size > 0 else ()

    def convert(tensor) -> tuple[str, str, tuple[int, ...]]:
        return tensor.name, mc.DataType.Name(tensor.data_type).removeprefix("TYPE_"), (*batch, *tensor.dims)

    return [convert(t) for t in config.input], [convert(t) for t in config.output]


def exported_models(repository: Path) -> list[str]:
    """Names of the complete models in a repository (config plus ONNX)."""
    if not repository.is_dir():
        return []
    return sorted(
        path.name
        for path in repository.iterdir()
        if not path.name.startswith(".")
        and (path / CONFIG_FILE).is_file()
        and (path / VERSION / ONNX_FILE).is_file()
    )
