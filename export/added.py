"""The repository as a catalog: a checkpoint added (``--checkpoint``), a model taken out
(``--remove``), and what the repository serves (``--list``).

An added checkpoint is exported whole into a staging directory beside the repository, and its
models are moved into place only once every one of them is written: a refusal or a failure
leaves the repository exactly as it was.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from google.protobuf import text_format

from depthstream import model_config
from depthstream.contract import ModelSpec, fp32_variants, twins_of
from export.any_checkpoint import Overrides, derive_spec, locate
from export.checkpoints import CheckpointError, LoadedCheckpoint
from export.exporter import Exporter
from export.report import Progress, Row
from export.settings import ExportSettings


def served_specs(repository: Path) -> dict[str, ModelSpec | str]:
    """Each exported model's spec, or why its config cannot be read."""
    found: dict[str, ModelSpec | str] = {}
    for name in model_config.exported_models(repository):
        try:
            text = (repository / name / model_config.CONFIG_FILE).read_text()
            found[name] = model_config.spec_of(model_config.parse(text))
        except (OSError, ValueError, text_format.ParseError) as exc:
            found[name] = str(exc)
    return found


def family_names(spec: ModelSpec) -> list[str]:
    """Every model name an export of this checkpoint may write: presets and twins."""
    return [variant.name for fp32 in fp32_variants(spec) for variant in (fp32, *twins_of(fp32))]


def refuse_clash(spec: ModelSpec, repository: Path) -> None:
    """A name the repository serves for another checkpoint is refused (the same one is updated)."""
    served = served_specs(repository)
    for name in family_names(spec):
        other = served.get(name)
        if other is None:
            continue
        source = other.hub_id if isinstance(other, ModelSpec) else "an unreadable config"
        if source != spec.hub_id:
            raise CheckpointError(
                f"{name} is served already, from {source}; choose another name with --name "
                f"(or take it out first: python -m export --remove {name})"
            )


def earlier_models(spec: ModelSpec, repository: Path) -> list[str]:
    """The models an earlier export of the same checkpoint under the same name wrote."""
    return [
        name
        for name, other in served_specs(repository).items()
        if isinstance(other, ModelSpec)
        and other.checkpoint == spec.checkpoint
        and other.hub_id == spec.hub_id
    ]


def load_added(spec: ModelSpec, directory: Path) -> LoadedCheckpoint:
    from transformers import AutoModelForDepthEstimation

    try:
        model = AutoModelForDepthEstimation.from_pretrained(directory, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"cannot load {spec.hub_id}: {exc}") from None
    return LoadedCheckpoint(model.eval(), spec.hub_id, random_weights=False)


def export_checkpoint(args: ExportSettings, progress: Progress) -> tuple[ModelSpec, list[Row]]:
    """Export ``args.checkpoint`` (its presets and twins) into the repository, all or nothing."""
    assert args.checkpoint is not None
    directory, source, revision = locate(args.checkpoint)
    spec = derive_spec(directory, source, Overrides(args.name, args.depth, args.max_depth), revision)
    refuse_clash(spec, args.output)
    args.output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{spec.name}-", dir=args.output))
    try:
        staged_args = dataclasses.replace(args, output=staging, force=True)
        exporter = Exporter(spec, staged_args, progress, loader=lambda: load_added(spec, directory))
        progress.total += exporter.steps()
        rows = [exporter.refreshed(row) for row in exporter.run()]
        # the earlier export's models go (twins may be judged otherwise now, presets may differ)
        for name in family_names(spec) + earlier_models(spec, args.output):
            shutil.rmtree(args.output / name, ignore_errors=True)
        for model in sorted(p for p in staging.iterdir() if not p.name.startswith(".")):
            model.rename(args.output / model.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return spec, rows


def remove(repository: Path, name: str) -> list[str]:
    """Take a model and its twins (an added checkpoint: all its models) out of the repository."""
    served = served_specs(repository)
    if name not in served:
        raise CheckpointError(
            f"--remove {name}: {repository} serves no such model ({', '.join(served) or 'none'})"
        )
    spec = served[name]
    if isinstance(spec, ModelSpec) and spec.added and spec.checkpoint == name:
        names = [n for n in family_names(spec) if n in served]
    else:
        names = [name, *(f"{name}_{suffix}" for suffix in ("int8", "bf16") if f"{name}_{suffix}" in served)]
    for each in names:
        shutil.rmtree(repository / each)
    return names


def listing(repository: Path) -> str:
    """What the repository serves, a line each: kind, units, network input, precision, source."""
    served = served_specs(repository)
    if not served:
        return f"{repository} serves no model yet (make export, or python -m export --checkpoint ID_OR_DIR)"
    lines = [f"{repository} serves {len(served)} models:"]
    width = max(len(name) for name in served)
    for name, spec in served.items():
        if isinstance(spec, str):
            lines.append(f"  {name:<{width}}  NOT SERVABLE: {spec}")
            continue
        meaning = spec.depth_meaning
        added = "  added" if spec.added else ""
        lines.append(
            f"  {name:<{width}}  {meaning['kind']:<8} {meaning['units']:<8} {spec.resize.describe():<26} "
            f"{spec.precision:<5} {spec.hub_id}{added}"
        )
    return "\n".join(lines)
