"""``python -m export --checkpoint ID_OR_DIR``: any ``transformers`` depth checkpoint, served.

From the checkpoint's own configs (``config.json``, ``preprocessor_config.json``, read through
transformers' own classes) this derives the served model's spec: the resize rule and filter of
its image processor (reproduced in the graph as Pillow does it), rescale, mean and std, padding,
the resize back that the family's ``post_process_depth_estimation`` does, and what its depth
means. A checkpoint the graph cannot serve faithfully is refused with the reason, before
anything is written.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthstream.contract import (
    MODEL_NAME,
    MODELS,
    DepthKind,
    Interpolation,
    ModelSpec,
    OutputResize,
    Resize,
    ResizeRule,
)
from export.checkpoints import CheckpointError

log = logging.getLogger(__name__)

# The families whose preprocessing the graph reproduces, and what their DEPTH means.
FAMILY_DEPTH = {
    "depth_anything": None,  # from its config: depth_estimation_type, max_depth
    "dpt": DepthKind.RELATIVE,  # MiDaS-style relative inverse depth
    "glpn": DepthKind.METRIC,  # sigmoid x max_depth, metres (NYU, KITTI)
    "depth_pro": DepthKind.METRIC,  # metres, from its inverse depth and its field of view
}
DEPTH_PRO = "depth_pro"
# Depth families refused, with the reason (the others: unknown until --depth is given)
REFUSED_FAMILIES = {
    "prompt_depth_anything": "it needs a prompt depth map beside the image (the contract takes an image only)",
    "zoedepth": "its processor pads by reflection and its post-processing averages a flipped pass; "
    "the graph does not reproduce that yet",
}
# PIL's resample codes (PIL.Image.Resampling) the graph reproduces (export.pil_resize)
PIL_FILTERS = {
    1: Interpolation.LANCZOS,
    2: Interpolation.BILINEAR,
    3: Interpolation.BICUBIC,
    4: Interpolation.BOX,
}
PIL_NAMES = {0: "nearest", 5: "hamming"}
# what DPT-family post-processing does (transformers' post_process_depth_estimation)
POST_PROCESS = OutputResize(Interpolation.BICUBIC, align_corners=False)
PRESET_FRACTIONS = (0.7, 0.5)  # of the network size, for families that keep the aspect
GLPN_MAX_SIDE = 1024  # GLPN's processor has no size of its own: the network's ceiling
# Triton names of at most 63 characters, with room for a preset's and a twin's suffix (_1288_int8)
MAX_NAME = 52


@dataclass(frozen=True)
class Overrides:
    """What the user said beside the checkpoint (flags)."""

    name: str | None = None
    depth: DepthKind | None = None
    max_depth: float | None = None


def derived_name(source: str) -> str:
    """A Triton name from a hub id or a directory: its last part, lower case, ``_`` between words."""
    last = source.rstrip("/").split("/")[-1]
    name = re.sub(r"[^a-z0-9]+", "_", last.lower()).strip("_").removesuffix("_hf")
    if not name or not name[0].isalnum():
        name = f"model_{name}".strip("_")
    return name[:MAX_NAME].rstrip("_")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path.parent}: no {path.name}; expected a save_pretrained directory ({what})"
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def check_files(directory: Path) -> dict:
    """The checkpoint's config, after refusing what cannot be loaded safely and offline."""
    if not directory.is_dir():
        raise CheckpointError(f"--checkpoint {directory}: no such directory")
    config = _read_json(directory / "config.json", "the model's config")
    if config.get("auto_map"):
        raise CheckpointError(
            f"{directory}: the checkpoint needs remote code (auto_map in config.json); "
            "the export never sets trust_remote_code"
        )
    if not any(directory.glob("*.safetensors")):
        pickles = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt*")]
        found = (
            f" (it has {', '.join(sorted(pickles))}: pickle, which can run code when loaded)"
            if pickles
            else ""
        )
        raise CheckpointError(
            f"{directory}: no safetensors weights{found}; the export loads safetensors only"
        )
    return config


def family_depth(model_type: str, config: dict, overrides: Overrides) -> tuple[DepthKind, float | None]:
    """What the checkpoint's DEPTH means: the flags, else the family's own meaning."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES as DEPTH_FAMILIES,
    )

    if model_type not in DEPTH_FAMILIES:
        raise CheckpointError(
            f"a {model_type!r} checkpoint is not a depth model (AutoModelForDepthEstimation loads "
            f"{', '.join(DEPTH_FAMILIES)})"
        )
    if model_type in REFUSED_FAMILIES:
        raise CheckpointError(f"{model_type} is not served: {REFUSED_FAMILIES[model_type]}")
    if model_type == "depth_anything":
        kind = DepthKind(config.get("depth_estimation_type") or "relative")
        max_depth = config.get("max_depth") if kind is DepthKind.METRIC else None
    elif model_type in FAMILY_DEPTH:
        kind = FAMILY_DEPTH[model_type]  # type: ignore[assignment]  # only depth_anything's is None
        max_depth = config.get("max_depth", 10) if kind is DepthKind.METRIC else None
    elif overrides.depth is None:
        raise CheckpointError(
            f"the export does not know what a {model_type} checkpoint's depth means: "
            "say it with --depth relative|metric (and --max-depth for a bounded metric head)"
        )
    else:
        kind, max_depth = overrides.depth, None
    if overrides.depth is not None:
        kind = overrides.depth
    if overrides.max_depth is not None:
        max_depth = overrides.max_depth
    return kind, (max_depth if kind is DepthKind.METRIC else None)


def _filter(processor: Any) -> Interpolation:
    code = int(getattr(processor, "resample", 3))
    if code not in PIL_FILTERS:
        raise CheckpointError(
            f"its processor resamples with PIL's {PIL_NAMES.get(code, code)} filter, which the graph does not reproduce"
        )
    return PIL_FILTERS[code]


# the processors whose preprocessing and post-processing the graph reproduces (their PIL backends
# where torchvision is missing, as here)
KNOWN_PROCESSORS = ("DPTImageProcessor", "GLPNImageProcessor")


def processor_resize(processor: Any, model_type: str) -> Resize:
    """The processor's resize rule, filter and padding, as the graph reproduces them."""
    kind = type(processor).__name__
    if not kind.startswith(KNOWN_PROCESSORS):
        raise CheckpointError(
            f"its image processor is {kind}; the graph reproduces {' and '.join(KNOWN_PROCESSORS)} "
            "(their preprocessing and their post_process_depth_estimation)"
        )
    interpolation = _filter(processor)
    if kind.startswith("GLPN"):
        if getattr(processor, "do_resize", True) is False:
            raise CheckpointError("its processor does not resize: every input size would reach the network")
        return Resize(
            size=GLPN_MAX_SIDE,
            rule=ResizeRule.DIVISOR,
            multiple_of=int(getattr(processor, "size_divisor", 32)),
            interpolation=interpolation,
            pil=True,
        )
    if not getattr(processor, "do_resize", True):
        raise CheckpointError("its processor does not resize: every input size would reach the network")
    size = processor.size
    height, width = int(size["height"]), int(size["width"])
    keep_aspect = bool(getattr(processor, "keep_aspect_ratio", False))
    if keep_aspect and height != width:
        raise CheckpointError(
            f"its processor keeps the aspect towards a {height}x{width} box; the graph keeps it towards a square"
        )
    pad_to = int(getattr(processor, "size_divisor", None) or 1) if getattr(processor, "do_pad", False) else 1
    multiple = int(getattr(processor, "ensure_multiple_of", 1) or 1)
    if not keep_aspect:  # transformers rounds a fixed box to the multiple too (384 by 14: 378)
        height, width = (max(multiple, round(side / multiple) * multiple) for side in (height, width))
    return Resize(
        size=height,
        rule=ResizeRule.CLOSEST if keep_aspect else ResizeRule.STRETCH,
        multiple_of=multiple,
        interpolation=interpolation,
        width=None if keep_aspect or width == height else width,
        pil=True,
        pad_to=pad_to,
    )


def normalization(processor: Any) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
    """(rescale, mean, std) as the processor applies them to the uint8 image."""
    rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    if not getattr(processor, "do_normalize", False):
        return rescale, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def three(value: Any) -> tuple[float, ...]:
        values = [float(v) for v in (value if isinstance(value, list | tuple) else [value])]
        return tuple(values * 3) if len(values) == 1 else tuple(values)

    return rescale, three(processor.image_mean), three(processor.image_std)


def load_processor(directory: Path) -> Any:
    _read_json(directory / "preprocessor_config.json", "the image processor's config")
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(directory)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise CheckpointError(f"{directory}: its image processor does not load here ({exc})") from None


def presets(resize: Resize) -> tuple[int, ...]:
    """Smaller network sizes for families that keep the aspect (as Depth Anything's 364, 252)."""
    if resize.rule is not ResizeRule.CLOSEST:
        return ()
    m = resize.multiple_of
    sizes = {round(resize.size * fraction / m) * m for fraction in PRESET_FRACTIONS}
    return tuple(sorted((s for s in sizes if m <= s < resize.size), reverse=True))


def depth_pro_preprocessing(directory: Path, config: dict) -> tuple[Resize, float, tuple, tuple]:
    """Depth Pro's processor (DepthProImageProcessor), read from its preprocessor_config.json: it
    imports torchvision, which the graph replaces. It normalizes first, then stretches the image
    to its size with torch's bilinear (no antialiasing); its field of view makes the depth metric
    (post_process_depth_estimation), so a checkpoint without its FOV head is refused."""
    if not config.get("use_fov_model", False):
        raise CheckpointError(
            "this Depth Pro checkpoint has no field-of-view head (use_fov_model): its depth is not in "
            "metres without one, and it has no camera to serve"
        )
    raw = _read_json(directory / "preprocessor_config.json", "the image processor's config")
    size = raw.get("size") or {"height": 1536, "width": 1536}
    if not raw.get("do_resize", True):
        raise CheckpointError("its processor does not resize: every input size would reach the network")
    if int(raw.get("resample", 2)) != 2:
        raise CheckpointError(
            "its processor resizes with another filter than bilinear, which the graph does not reproduce"
        )
    height, width = int(size["height"]), int(size["width"])
    resize = Resize(
        size=height,
        rule=ResizeRule.STRETCH,
        interpolation=Interpolation.BILINEAR,
        width=None if width == height else width,
    )
    rescale = float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0
    mean = tuple(float(v) for v in raw.get("image_mean", [0.5] * 3))
    std = tuple(float(v) for v in raw.get("image_std", [0.5] * 3))
    if not raw.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return resize, rescale, mean, std


def derive_spec(directory: Path, source: str, overrides: Overrides, revision: str = "") -> ModelSpec:
    """The served model's spec for one checkpoint directory, or CheckpointError with the reason."""
    config = check_files(directory)
    model_type = str(config.get("model_type", ""))
    kind, max_depth = family_depth(model_type, config, overrides)
    if model_type == DEPTH_PRO:
        resize, rescale, mean, std = depth_pro_preprocessing(directory, config)
    else:
        processor = load_processor(directory)
        resize = processor_resize(processor, model_type)
        rescale, mean, std = normalization(processor)
    name = overrides.name or derived_name(source)
    if not MODEL_NAME.fullmatch(name):
        raise CheckpointError(
            f"--name {name!r}: a Triton name is lower case letters, digits and _ (at most 63)"
        )
    if name in MODELS:
        raise CheckpointError(f"{name}: a curated model's name; choose another with --name")
    architectures = config.get("architectures") or []
    return ModelSpec(
        name=name,
        title=source.rstrip("/").split("/")[-1] if Path(source).is_dir() else source,
        checkpoint=name,
        hub_id=source,
        architecture=architectures[0] if architectures else "",
        model_type=model_type,
        resize=resize,
        mean=mean,  # three values, checked by the processor
        std=std,
        # Depth Pro's post-processing resizes its inverse depth back with its processor's bilinear
        output_resize=OutputResize(Interpolation.BILINEAR, align_corners=False)
        if model_type == DEPTH_PRO
        else POST_PROCESS,
        depth=kind,
        max_depth_m=max_depth,
        rescale=rescale,
        added=True,
        revision=revision,
        presets=presets(resize),
        intrinsics=model_type == DEPTH_PRO,  # its field of view, served as INTRINSICS
    )


def download(hub_id: str) -> tuple[Path, str]:
    """A hub checkpoint's configs and safetensors weights, and the revision fetched."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(
            f"cannot download {hub_id} ({type(exc).__name__}); download it where the hub is reachable "
            "(huggingface-cli download ID --local-dir DIR) and pass --checkpoint DIR"
        ) from None
    return path, path.name  # snapshot directories are named by their commit


def locate(checkpoint: str) -> tuple[Path, str, str]:
    """(directory, source as the user named it, revision): a local directory, or a hub id."""
    path = Path(checkpoint)
    if path.is_dir():
        return path.resolve(), str(path.resolve()), ""
    if path.exists() or checkpoint.startswith((".", "/")) or checkpoint.count("/") != 1:
        raise CheckpointError(f"--checkpoint {checkpoint}: neither a directory nor a hub id (owner/name)")
    directory, revision = download(checkpoint)
    return directory, checkpoint, revision
