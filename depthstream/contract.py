"""The model contract: one source of truth for export, configs, bridge, clients and tests.

Every served model takes raw RGB pixels and returns depth at the input's own size: relative
inverse depth (larger = closer, no unit), metres from the camera for the metric models, or depth
up to one unknown scale (Depth Anything 3; larger = farther); ``ModelSpec.depth`` says which.
A model that estimates its camera also returns ``INTRINSICS`` (``ModelSpec.intrinsics``): a 3x3
matrix per image, in pixels of the input image. Preprocessing (resize + normalize) and the
resize back are fused into the exported graph, so a client never needs to know a model's input
resolution.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import asdict, dataclass, replace

INPUT_NAME = "IMAGE"
INPUT_DTYPE = "UINT8"  # Triton datatype string (metadata); configs use TYPE_UINT8
INPUT_DIMS = (-1, -1, 3)  # per item: H, W, RGB; the batch dimension comes from max_batch_size
OUTPUT_NAME = "DEPTH"
OUTPUT_DTYPE = "FP32"
OUTPUT_DIMS = (-1, -1)  # per item: H, W (the input's size)
# Optional: the camera a model estimates, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] per item, in
# pixels of the input image (already scaled from the network's size back to the input's)
INTRINSICS_NAME = "INTRINSICS"
INTRINSICS_DTYPE = "FP32"
INTRINSICS_DIMS = (3, 3)

# Triton's max_batch_size for every model; requests of the same H and W batch together.
MAX_BATCH_SIZE = 4

# Where export records that a model carries meaningless random weights (smoke mode).
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS"

# What one request may ask of a model, wherever it comes from (the bridge, or a direct gRPC
# client of the embedded Triton, which refuses beyond these before running anything). The
# network's own input is bounded inside the graph (Resize.max_aspect); these bound the work
# done at the input's size: the uint8 -> float conversion, the resize in and the resize back.
# Measured (make bench, worst case): with the ceiling, the costliest image is one beyond 2.5:1
# with the most pixels. The ceiling alone costs ~2.7x a 640x480 frame (the official 518x1288 at
# 2.5:1); every megapixel adds ~50 ms on 2 cores (conversion, resizes, gRPC), so 4096x1638 (DCI
# 4K limits) reached 2.95-3.2x. Full HD keeps the worst case near the ceiling's own cost.
MAX_IMAGE_PIXELS = 1920 * 1080  # per image: Full HD, either orientation
MAX_IMAGE_SIDE = 1920  # either side, in pixels
MIN_IMAGE_SIDE = 2  # the resize needs at least a 2x2 image to have a shape worth resizing


class Interpolation(enum.StrEnum):
    BICUBIC = "bicubic"
    BILINEAR = "bilinear"
    LANCZOS = "lanczos"  # PIL's only (an added checkpoint's processor)
    BOX = "box"  # PIL's only
    AREA = "area"  # OpenCV's INTER_AREA when shrinking, INTER_CUBIC when enlarging (Depth Anything 3)


class ResizeRule(enum.StrEnum):
    """How the network's input size follows the image's."""

    LOWER_BOUND = "lower_bound"  # official Depth Anything: both sides >= size, keep the aspect
    STRETCH = "stretch"  # a fixed size x width (MiDaS DPT-BEiT, most DPT checkpoints)
    CLOSEST = "closest"  # transformers' keep_aspect_ratio: scale as little as possible
    DIVISOR = "divisor"  # GLPN: each side rounded down to a multiple (no size of its own)
    UPPER_BOUND = "upper_bound"  # Depth Anything 3: the long side to size, then nearest multiples


@dataclass(frozen=True)
class Resize:
    """How a model's input is resized before the network.

    LOWER_BOUND (Depth Anything): the official rule, scale so both sides are >= ``size``, each
    side rounded to the nearest multiple of ``multiple_of`` and never below ``size``; then the
    ceiling: neither side above ``max_side`` = that rule's long side at ``max_aspect``:1
    (1288 for size 518). Up to ``max_aspect``:1, in both orientations, the ceiling never binds
    and the network input is exactly the official one. Beyond it, the network input is
    ``size`` x ``max_side`` and the image is squeezed along its long side, as MiDaS squeezes
    every image to a square; the output is still resized back to the input's own size.
    Without it, a 60x600 strip became a 518x5180 input (63 s, 9.8 GB on 2 cores).

    STRETCH (MiDaS DPT-BEiT): the image is stretched to ``size`` x ``width`` (square without one).

    CLOSEST (transformers' DPT and Depth Anything processors, ``keep_aspect_ratio``): the one
    scale of the two nearer to 1, each side rounded to the nearest multiple; the same ceiling.

    DIVISOR (GLPN): each side rounded down to a multiple of ``multiple_of``; ``size`` is the
    ceiling on the long side (the image is scaled down to it first, keeping its aspect).

    ``pil``: resampled as the transformers processors do it, with PIL (antialiased when
    shrinking, PIL's filters, uint8 between the passes), instead of OpenCV's cubic.
    ``pad_to``: the normalized image centre-padded with zeros to a multiple (DPT's ``do_pad``).
    """

    size: int
    rule: ResizeRule = ResizeRule.LOWER_BOUND
    multiple_of: int = 1
    interpolation: Interpolation = Interpolation.BICUBIC
    max_aspect: float = 2.5
    width: int | None = None  # STRETCH only: the fixed width (square when None)
    pil: bool = False
    pad_to: int = 1

    @property
    def keep_aspect(self) -> bool:
        return self.rule is not ResizeRule.STRETCH

    @property
    def max_side(self) -> int:
        """The ceiling on either side of the network input."""
        if self.rule is ResizeRule.STRETCH:
            return max(self.size, self.width or self.size)
        if self.rule in (ResizeRule.DIVISOR, ResizeRule.UPPER_BOUND):
            return self.size
        return self._constrain(self.size * self.max_aspect)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the network sees for an input of this size (reference maths)."""
        if self.rule is ResizeRule.STRETCH:
            return self.size, self.width or self.size
        if self.rule is ResizeRule.UPPER_BOUND:
            return self._upper_bound(height, width)
        if self.rule is ResizeRule.DIVISOR:
            scale = min(1.0, self.size / max(height, width))
            m = self.multiple_of
            return max(m, math.floor(height * scale / m) * m), max(m, math.floor(width * scale / m) * m)
        if self.rule is ResizeRule.CLOSEST:
            scale_h, scale_w = self.size / height, self.size / width
            scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
            m, ceiling = self.multiple_of, self.max_side
            return tuple(  # type: ignore[return-value]
                min(max(m, round(scale * side / m) * m), ceiling) for side in (height, width)
            )
        scale = max(self.size / height, self.size / width)
        ceiling = self.max_side
        return min(self._constrain(scale * height), ceiling), min(self._constrain(scale * width), ceiling)

    def padded(self, side: int) -> int:
        return -(-side // self.pad_to) * self.pad_to

    def describe(self) -> str:
        """The rule in a few words (export's table, the served config)."""
        if self.rule is ResizeRule.STRETCH:
            return f"{self.size}x{self.width or self.size}"
        if self.rule is ResizeRule.DIVISOR:
            return f"multiple of {self.multiple_of} (sides <= {self.size})"
        if self.rule is ResizeRule.UPPER_BOUND:
            return f"long side {self.size}"
        return f"{self.size} (sides <= {self.max_side})"

    def _upper_bound(self, height: int, width: int) -> tuple[int, int]:
        # Depth Anything 3's InputProcessor: the long side to ``size`` (Python round: half to
        # even), then each side to its nearest multiple (ties up); at least one multiple, where
        # the official processor would hand the network a side of 0 patches
        scale = self.size / max(height, width)
        m = self.multiple_of

        def nearest(side: int) -> int:
            down = side // m * m
            return max(m, down + m if down + m - side <= side - down else down)

        return nearest(max(1, round(height * scale))), nearest(max(1, round(width * scale)))

    def _constrain(self, x: float) -> int:
        # Official Depth-Anything-V2 Resize.constrain_to_multiple_of (numpy round: half to even).
        m = self.multiple_of
        y = int(round(x / m) * m)
        if y < self.size:
            y = int(-(-x // m) * m)  # ceil to the multiple
        return y


@dataclass(frozen=True)
class OutputResize:
    """How the network's depth is resized back to the input's size."""

    interpolation: Interpolation
    align_corners: bool


class DepthKind(enum.StrEnum):
    """What a model's DEPTH means."""

    RELATIVE = "relative"  # relative inverse depth: larger is closer; no unit, no fixed scale
    METRIC = "metric"  # distance along the optical axis, in metres: larger is farther
    SCALED = "scaled"  # distance along the optical axis up to one unknown scale: larger is farther

    @property
    def units(self) -> str:
        return {DepthKind.METRIC: "m", DepthKind.SCALED: "scale"}.get(self, "relative")

    @property
    def larger(self) -> str:
        return "closer" if self is DepthKind.RELATIVE else "farther"

    @property
    def is_distance(self) -> bool:
        """Depth proportional to distance (metres or up to scale), not inverse depth."""
        return self is not DepthKind.RELATIVE


class Precision(enum.StrEnum):
    FP32 = "fp32"
    INT8 = "int8"  # ONNX Runtime dynamic quantization of the MatMuls (CPU)
    BF16 = "bf16"  # OpenVINO, the network in BF16 and the fused pre/post in FP32 (AMX, AVX512-BF16)


TWIN_PRECISIONS = (Precision.INT8, Precision.BF16)  # each FP32 model keeps at most one twin


@dataclass(frozen=True)
class ModelSpec:
    """One served model: a checkpoint, the size its network sees, and a precision."""

    name: str
    title: str
    checkpoint: str  # name of the base model whose weights it uses (its --model choice)
    hub_id: str
    architecture: str  # transformers model class the checkpoint must load as
    model_type: str  # config.model_type of that checkpoint
    resize: Resize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_resize: OutputResize
    precision: Precision = Precision.FP32
    depth: DepthKind = DepthKind.RELATIVE
    max_depth_m: float | None = None  # a metric head's ceiling: sigmoid x max_depth
    rescale: float = 1 / 255  # uint8 -> the processor's scale, before mean and std
    added: bool = False  # exported with --checkpoint, not one of the curated models
    revision: str = ""  # the checkpoint's hub revision, where it came from the hub
    presets: tuple[int, ...] = ()  # smaller network sizes served beside it (keep-aspect rules)
    intrinsics: bool = False  # also returns INTRINSICS: the camera it estimates

    def to_json(self) -> str:
        """The whole spec, as the export writes it into the served config (parameters)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """A spec read back from a served config; ValueError names what is wrong."""
        try:
            raw = json.loads(text)
            resize = raw.pop("resize")
            output = raw.pop("output_resize")
            return cls(
                **{
                    **raw,
                    "mean": tuple(raw["mean"]),
                    "std": tuple(raw["std"]),
                    "presets": tuple(raw["presets"]),
                    "precision": Precision(raw["precision"]),
                    "depth": DepthKind(raw["depth"]),
                    "intrinsics": bool(raw.get("intrinsics", False)),  # absent before the camera
                },
                resize=Resize(
                    **{
                        **resize,
                        "rule": ResizeRule(resize["rule"]),
                        "interpolation": Interpolation(resize["interpolation"]),
                    }
                ),
                output_resize=OutputResize(
                    Interpolation(output["interpolation"]), bool(output["align_corners"])
                ),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a model spec ({type(exc).__name__}: {exc})") from None

    @property
    def depth_meaning(self) -> dict:
        """What DEPTH means, as every client reads it (/api/models, hello, headers, config)."""
        meaning: dict[str, str | int | float] = {
            "kind": str(self.depth),
            "units": self.depth.units,
            "larger": self.depth.larger,
        }
        if self.max_depth_m is not None:
            meaning["max_m"] = self.max_depth_m
        return meaning

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs the exported graph and the served config declare, in order."""
        return (OUTPUT_NAME, INTRINSICS_NAME) if self.intrinsics else (OUTPUT_NAME,)

    @property
    def fp32_twin(self) -> str:
        """The FP32 model a reduced-precision twin is made from (itself for FP32)."""
        return self.name if self.precision == Precision.FP32 else self.name.removesuffix(f"_{self.precision}")

    @property
    def is_twin(self) -> bool:
        return self.precision != Precision.FP32


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEPTH_ANYTHING_V2_SMALL = ModelSpec(
    name="depth_anything_v2_small",
    title="Depth-Anything-V2-Small",
    checkpoint="depth_anything_v2_small",
    hub_id="depth-anything/Depth-Anything-V2-Small-hf",
    architecture="DepthAnythingForDepthEstimation",
    model_type="depth_anything",
    resize=Resize(size=518, rule=ResizeRule.LOWER_BOUND, multiple_of=14),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    # Official infer_image: F.interpolate(depth, (h, w), mode="bilinear", align_corners=True)
    output_resize=OutputResize(Interpolation.BILINEAR, align_corners=True),
    # Quality presets: the network's input size is the CPU lever (tokens grow with the square
    # of the side). Depth Anything takes any multiple of 14; DPT-BEiT stays at its trained 384.
    presets=(364, 252),
)

MIDAS_DPT_BEIT_BASE_384 = ModelSpec(
    name="midas_dpt_beit_base_384",
    title="MiDaS DPT-BEiT-Base-384",
    checkpoint="midas_dpt_beit_base_384",
    hub_id="Intel/dpt-beit-base-384",
    architecture="DPTForDepthEstimation",
    model_type="dpt",
    resize=Resize(size=384, rule=ResizeRule.STRETCH),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    # MiDaS run.py and Hugging Face post-processing: bicubic, align_corners=False
    output_resize=OutputResize(Interpolation.BICUBIC, align_corners=False),
)


def _metric(setting: str, max_depth_m: int) -> ModelSpec:
    """Depth-Anything-V2's metric siblings: the same ViT-S backbone and preprocessing (the official
    metric_depth infer_image: 518, keep aspect, multiple of 14, bicubic, ImageNet normalization;
    depth resized back bilinear, align_corners=True), a head ending in sigmoid x max_depth."""
    name = f"depth_anything_v2_metric_{setting.lower()}_small"
    return replace(
        DEPTH_ANYTHING_V2_SMALL,
        name=name,
        title=f"Depth-Anything-V2-Metric-{setting}-Small",
        checkpoint=name,
        hub_id=f"depth-anything/Depth-Anything-V2-Metric-{setting}-Small-hf",
        depth=DepthKind.METRIC,
        max_depth_m=max_depth_m,
        presets=(),
    )


DEPTH_ANYTHING_V2_METRIC_INDOOR_SMALL = _metric("Indoor", 20)  # trained on Hypersim: rooms
DEPTH_ANYTHING_V2_METRIC_OUTDOOR_SMALL = _metric("Outdoor", 80)  # trained on Virtual KITTI 2: streets

# Depth Anything 3 (the `depth-anything-3` package, not transformers: export.da3): its input
# processor's rule (the long side to 504, sides to the nearest multiple of 14, cv2 INTER_AREA
# shrinking and INTER_CUBIC enlarging, ImageNet normalization), depth up to scale, and the
# camera from its camera decoder. It returns depth at the network's size; bilinear brings it back.
DEPTH_ANYTHING_3_SMALL = ModelSpec(
    name="depth_anything_3_small",
    title="Depth-Anything-3-Small",
    checkpoint="depth_anything_3_small",
    hub_id="depth-anything/DA3-SMALL",
    architecture="DepthAnything3Net",
    model_type="depth_anything_3",
    resize=Resize(size=504, rule=ResizeRule.UPPER_BOUND, multiple_of=14, interpolation=Interpolation.AREA),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    output_resize=OutputResize(Interpolation.BILINEAR, align_corners=False),
    depth=DepthKind.SCALED,
    presets=(364, 252),
    intrinsics=True,
)

# The reference checkpoints: relative depth, always exported, compared side by side by the bench.
CHECKPOINTS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (DEPTH_ANYTHING_V2_SMALL, MIDAS_DPT_BEIT_BASE_384)
}
# The metric checkpoints: exported by `make export` too, served where present (optional).
METRIC_CHECKPOINTS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (DEPTH_ANYTHING_V2_METRIC_INDOOR_SMALL, DEPTH_ANYTHING_V2_METRIC_OUTDOOR_SMALL)
}
# The checkpoints that estimate their camera (INTRINSICS): exported by `make export` too.
CAMERA_CHECKPOINTS: dict[str, ModelSpec] = {DEPTH_ANYTHING_3_SMALL.name: DEPTH_ANYTHING_3_SMALL}
# What `python -m export --model` chooses between.
EXPORTABLE: dict[str, ModelSpec] = {**CHECKPOINTS, **METRIC_CHECKPOINTS, **CAMERA_CHECKPOINTS}

DEPTH_ANYTHING_PRESETS = DEPTH_ANYTHING_V2_SMALL.presets


def _preset(base: ModelSpec, size: int) -> ModelSpec:
    return replace(
        base,
        name=f"{base.name}_{size}",
        title=f"{base.title} @{size}",
        resize=replace(base.resize, size=size),
        presets=(),
    )


def _twin(spec: ModelSpec, precision: Precision) -> ModelSpec:
    return replace(
        spec, name=f"{spec.name}_{precision}", title=f"{spec.title} {precision.upper()}", precision=precision
    )


def twins_of(spec: ModelSpec) -> list[ModelSpec]:
    """The reduced-precision candidates of one FP32 model."""
    return [_twin(spec, precision) for precision in TWIN_PRECISIONS]


def fp32_variants(base: ModelSpec) -> list[ModelSpec]:
    """A checkpoint's FP32 models: itself, then its quality presets."""
    return [base, *(_preset(base, size) for size in base.presets)]


def all_variants(base: ModelSpec) -> list[ModelSpec]:
    """Every model a checkpoint may give: its FP32 models and each one's twin candidates."""
    return [variant for spec in fp32_variants(base) for variant in (spec, *twins_of(spec))]


# Every curated model a Triton repository may serve. Of each FP32 model's twins (INT8, BF16), the
# export keeps at most one: the fastest faithful one, where it is faster than FP32 here
# (export.twins). Models exported with --checkpoint join them through ``register``.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec for base in EXPORTABLE.values() for spec in all_variants(base)
}
DEFAULT_MODEL = DEPTH_ANYTHING_V2_SMALL.name

# Models this process learnt of from a served repository (added with --checkpoint): the
# repository is the catalog, the curated tables above its defaults.
_ADDED: dict[str, ModelSpec] = {}

# Triton's model names, as the export derives them: what a stream, a flag or a path may name
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,62}")


def register(spec: ModelSpec) -> None:
    """Make a served model known to this process (read from its config's parameters)."""
    if spec.name not in MODELS:
        _ADDED[spec.name] = spec


def spec_of(name: str) -> ModelSpec:
    """The spec of a curated or registered model; KeyError for one this process does not know."""
    spec = MODELS.get(name) or _ADDED.get(name)
    if spec is None:
        raise KeyError(name)
    return spec


def known(name: str) -> bool:
    return name in MODELS or name in _ADDED


def known_models() -> dict[str, ModelSpec]:
    """Every model this process knows: the curated ones, then those registered."""
    return {**MODELS, **_ADDED}


def accuracy_rank(spec: ModelSpec) -> tuple:
    """Sort key, most accurate first: the larger network input, then FP32 before its INT8 twin,
    then Depth Anything V2 before MiDaS (its paper's zero-shot relative-depth results)."""
    return (
        -spec.resize.size,
        spec.precision != Precision.FP32,
        spec.checkpoint != DEPTH_ANYTHING_V2_SMALL.name,
    )


def variants_of(checkpoint: str) -> list[ModelSpec]:
    """The served models built from one checkpoint, FP32 before the twins."""
    specs = [spec for spec in known_models().values() if spec.checkpoint == checkpoint]
    return sorted(specs, key=lambda spec: spec.is_twin)


TensorSpec = tuple[str, str, tuple[int, ...]]  # name, Triton datatype, shape with batch dim


INTRINSICS_TENSOR: TensorSpec = (INTRINSICS_NAME, INTRINSICS_DTYPE, (-1, *INTRINSICS_DIMS))


def expected_tensors(intrinsics: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs a served model must declare, as Triton's metadata reports them
    (``intrinsics``: a model that estimates its camera)."""
    outputs: list[TensorSpec] = [(OUTPUT_NAME, OUTPUT_DTYPE, (-1, *OUTPUT_DIMS))]
    if intrinsics:
        outputs.append(INTRINSICS_TENSOR)
    return ([(INPUT_NAME, INPUT_DTYPE, (-1, *INPUT_DIMS))], outputs)


def declares_intrinsics(outputs: list[TensorSpec]) -> bool:
    """Whether a served model's outputs include the optional INTRINSICS (by name: its shape is
    checked by contract_violations)."""
    return any(name == INTRINSICS_NAME for name, _, _ in outputs)


def contract_violations(model: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> list[str]:
    """What differs between a served model's tensors and the contract (empty: it conforms)."""
    problems = []
    if not MODEL_NAME.fullmatch(model):
        problems.append(f"{model[:64]!r} is not a model name (lower case letters, digits and _, at most 63)")
    want_inputs, want_outputs = expected_tensors(declares_intrinsics(outputs))
    for kind, got, want in (("input", inputs, want_inputs), ("output", outputs, want_outputs)):
        normalized = [(name, dtype, tuple(shape)) for name, dtype, shape in got]
        if normalized != want:
            problems.append(f"{model}: {kind}s are {normalized}, the contract says {want}")
    return problems
