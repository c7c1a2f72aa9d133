"""Depth Anything 3 for export: the `depth-anything-3` package's network, its input processor's
resize, its depth and its camera estimate in one graph of any input size.

The package (Apache-2.0) is installed with ``--no-deps`` (requirements-nodeps.txt): its model code
needs torch, einops, addict and omegaconf; its declared dependencies (xformers, open3d, gsplat,
gradio...) serve its apps. Its ``api.py`` imports the input processor, which imports torchvision:
the network is built here as its ``from_pretrained`` builds it (``cfg.load_config`` of the
checkpoint's preset, ``cfg.create_object``, the safetensors state dict), and the processor's
rule is written into the graph (depthstream.contract.ResizeRule.UPPER_BOUND).

Its code computes several sizes with Python numbers, which a traced graph would freeze at the
traced size. ``make_exportable`` replaces those few methods, on the loaded network's own
instances, with the same maths in tensor ops:
- the RoPE positions (``PositionGetter``: a cache keyed by Python ints, ``cartesian_prod``);
- the RoPE frequency table (sized from ``int(positions.max())``): a fixed table large enough
  for the contract's largest network input; each position's values are the same;
- the position embedding's bicubic interpolation (scale factors from Python floats);
- the DualDPT head, run for depth only: its ray branch (the multi-view camera) is not served,
  and its UV embedding and upsampling sizes were Python numbers.
"""

from __future__ import annotations

import json
import logging
import math
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx.operators import shape_as_tensor

from depthstream.contract import ModelSpec
from export.checkpoints import CheckpointError, LoadedCheckpoint
from export.fused import FusedGraph
from export.resize import area_or_cubic, bicubic

log = logging.getLogger(__name__)

PACKAGE = "depth_anything_3"
DEPTH_ANYTHING_3 = "depth_anything_3"  # its ModelSpec.model_type: the package's, not transformers'
PRESET = "da3-small"  # the package's config of DA3-SMALL
CONFIG_JSON = "config.json"  # what its hub repositories hold: {"model_name": "da3-small"}
WEIGHTS_FILE = "model.safetensors"
# A checkpoint directory may carry its own architecture, in the package's YAML format (a
# fine-tuned variant; the tests' tiny network): used instead of the named preset.
ARCHITECTURE_FILE = "architecture.yaml"
ROPE_POSITIONS = 256  # > the largest network side in patches (+1 for the special tokens)
# Random weights (smoke mode): the horizontal field of view the camera head is shaped around
RANDOM_HFOV_DEG = 65.0


def _missing_package() -> CheckpointError:
    return CheckpointError(
        f"Depth Anything 3 needs the {PACKAGE.replace('_', '-')} package (make setup installs it, "
        "from requirements-nodeps.txt)"
    )


def package_config(name: str) -> Path:
    """The package's YAML config of a preset (da3-small, ...)."""
    try:
        import depth_anything_3
    except ImportError:
        raise _missing_package() from None
    path = Path(next(iter(depth_anything_3.__path__))) / "configs" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise CheckpointError(
            f"Depth Anything 3 has no preset {name!r} (the package knows {', '.join(known)})"
        )
    return path


def build_network(config_path: Path) -> nn.Module:
    """The network from a package-format YAML, as the package builds it."""
    try:
        from depth_anything_3.cfg import create_object, load_config
    except ImportError:
        raise _missing_package() from None
    return create_object(load_config(str(config_path))).eval()


def architecture_of(directory: Path) -> Path:
    """The YAML a checkpoint directory's network is built from: its own, else its preset's."""
    own = directory / ARCHITECTURE_FILE
    if own.is_file():
        return own
    config_path = directory / CONFIG_JSON
    if not config_path.is_file():
        raise CheckpointError(
            f"{directory}: no {CONFIG_JSON}; expected a Depth Anything 3 checkpoint (like DA3-SMALL)"
        )
    try:
        name = json.loads(config_path.read_text()).get("model_name", PRESET)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{directory}/{CONFIG_JSON} is not a JSON object ({exc})") from None
    return package_config(str(name))


class _Wrapped(nn.Module):
    """The package's DepthAnything3 holds the network as ``model``: its state dict's keys."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.model = network


def load_weights(network: nn.Module, weights: Path) -> None:
    """The checkpoint's safetensors into the network as its from_pretrained loads them
    (safetensors' load_model: tensors shared in the network are stored once), every tensor
    accounted for."""
    from safetensors.torch import load_model

    try:
        load_model(_Wrapped(network), str(weights), strict=True)
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(
            f"{weights} does not fit the network ({str(exc).strip().splitlines()[0]})"
        ) from None


def save_checkpoint(network: nn.Module, directory: Path, preset: str = PRESET) -> None:
    """Write a network as the hub's DA3 repositories hold it (config.json + model.safetensors)."""
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_JSON).write_text(json.dumps({"model_name": preset}) + "\n")
    save_model(_Wrapped(network), str(directory / WEIGHTS_FILE))


def download(spec: ModelSpec) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from export.checkpoints import offline_message

    log.info("downloading %s from the Hugging Face hub", spec.hub_id)
    try:
        return Path(snapshot_download(spec.hub_id, allow_patterns=[CONFIG_JSON, WEIGHTS_FILE]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(offline_message(spec, type(exc).__name__)) from None


def load_checkpoint(spec: ModelSpec, weights: Path | None, random_weights: bool) -> LoadedCheckpoint:
    """DA3's network: random (smoke mode), from a local directory, or from the hub."""
    if random_weights:
        log.info("%s: RANDOM WEIGHTS (--random-weights): a smoke model whose depth is MEANINGLESS", spec.name)
        return LoadedCheckpoint(random_network(package_config(PRESET)), "random", random_weights=True)  # type: ignore[arg-type]
    directory = weights if weights is not None else download(spec)
    if not directory.is_dir():
        raise CheckpointError(f"--weights {directory}: no such directory")
    if not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"--weights {directory}: no {WEIGHTS_FILE} (a Depth Anything 3 checkpoint, like {spec.hub_id})"
        )
    network = build_network(architecture_of(directory))
    load_weights(network, directory / WEIGHTS_FILE)
    return LoadedCheckpoint(network.eval(), str(weights or spec.hub_id), random_weights=False)  # type: ignore[arg-type]


# --- random weights with structure (smoke mode and the tests' tiny network) --------------------


@torch.no_grad()
def give_structure(network: nn.Module, seed: int = 0) -> None:
    """Shape a random network's heads so its output is plausible: depth that varies across the
    image around 1 (the head ends in exp), and a field of view near RANDOM_HFOV_DEG (the camera
    head ends in ReLU: random, it says 0 degrees, an infinite focal length)."""
    from export.architectures import calibration_batch

    generator = torch.Generator().manual_seed(seed)
    net = typing_any(network)
    last = net.head.scratch.output_conv2[-1]
    captured: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    camera: list[torch.Tensor] = []
    fov = net.cam_dec.fc_fov[0]
    fov_hook = fov.register_forward_hook(lambda _m, inputs, _out: camera.append(inputs[0]))
    try:
        network(calibration_batch(336)[:, None])
    finally:
        hook.remove()
        fov_hook.remove()
    features = captured[0]
    direction = torch.randn(last.weight.shape, generator=generator)
    projection = F.conv2d(features, direction)
    std = projection.std().clamp_min(1e-12)
    last.weight.copy_(direction / std * 0.5)  # exp(N(0, 0.5)): depth from ~0.4 to ~2.7
    last.bias.copy_(-projection.mean(dim=(0, 2, 3)) / std * 0.5)
    # the field of view: a small random dependence on the image around a plausible value
    hfov = math.radians(RANDOM_HFOV_DEG)
    vfov = 2 * math.atan(math.tan(hfov / 2) * 3 / 4)  # the same camera on a 4:3 frame
    fov.weight.copy_(
        torch.randn(fov.weight.shape, generator=generator) * 0.002 / max(float(camera[0].std()), 1e-12)
    )
    fov.bias.copy_(torch.tensor([vfov, hfov]))


def random_network(config_path: Path, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    network = build_network(config_path)
    give_structure(network, seed)
    return network


# --- trace-friendly replacements (see the module's docstring) ------------------------------------


def _positions(batch_size, height, width, device=None) -> torch.Tensor:
    """PositionGetter: (row, column) of each patch, without its Python-int cache."""
    rows = torch.arange(height)  # traced sizes are 0-d tensors
    cols = torch.arange(width)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    return grid[None].expand(batch_size, -1, -1)


def _rope_forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RotaryPositionEmbedding2D.forward with a fixed-length frequency table."""
    feature_dim = tokens.size(-1) // 2
    cos_comp, sin_comp = self._compute_frequency_components(
        feature_dim, ROPE_POSITIONS, tokens.device, tokens.dtype
    )
    vertical, horizontal = tokens.chunk(2, dim=-1)
    vertical = self._apply_1d_rope(vertical, positions[..., 0], cos_comp, sin_comp)
    horizontal = self._apply_1d_rope(horizontal, positions[..., 1], cos_comp, sin_comp)
    return torch.cat((vertical, horizontal), dim=-1)


def _pos_encoding(self, x: torch.Tensor, w, h) -> torch.Tensor:
    """DinoVisionTransformer.interpolate_pos_encoding (``w`` is the height, as the package names
    it): PyTorch's bicubic with the scale factor (rows + 0.1) / M, through export.resize."""
    pos_embed = self.pos_embed.float()
    dim = x.shape[-1]
    side = round(math.sqrt(pos_embed.shape[1] - 1))  # a Python int: constant in the graph
    grid = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    rows, cols = w // self.patch_size, h // self.patch_size
    offset = self.interpolate_offset
    steps = tuple(side / (torch.as_tensor(n).to(torch.float32) + offset) for n in (rows, cols))
    grid = bicubic(grid, rows, cols, steps=steps).permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :1], grid), dim=1).to(x.dtype)


def _uv_embedding(x: torch.Tensor, aspect: torch.Tensor, ratio: float = 0.1) -> torch.Tensor:
    """DualDPT._add_pos_embed's UV grid and sin-cos embedding, sized from tensors."""
    shape = shape_as_tensor(x)
    height, width = shape[2].to(torch.float32), shape[3].to(torch.float32)
    diagonal = torch.sqrt(aspect * aspect + 1.0)
    span_x, span_y = aspect / diagonal, 1.0 / diagonal
    # torch.linspace(-s (n-1)/n, s (n-1)/n, n), written out: s (2 i + 1 - n) / n
    xs = span_x * (2 * torch.arange(shape[3]).to(torch.float32) + 1 - width) / width  # type: ignore[call-overload]
    ys = span_y * (2 * torch.arange(shape[2]).to(torch.float32) + 1 - height) / height  # type: ignore[call-overload]
    channels = x.shape[1]
    quarter = channels // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float32) / (channels / 4))
    ex, ey = xs[:, None] * omega, ys[:, None] * omega  # [width, C/4], [height, C/4]
    emb_x = torch.cat([torch.sin(ex), torch.cos(ex)], dim=1)  # [width, C/2]
    emb_y = torch.cat([torch.sin(ey), torch.cos(ey)], dim=1)  # [height, C/2]
    rows = emb_y.shape[0]
    cols = emb_x.shape[0]
    grid = torch.cat([emb_x[None].expand(rows, -1, -1), emb_y[:, None].expand(-1, cols, -1)], dim=-1)
    return x + grid.permute(2, 0, 1)[None] * ratio


def depth_head(head: nn.Module, feats, height, width) -> torch.Tensor:
    """DualDPT._forward_impl's depth branch (the ray branch is not served): [B, h, w] depth."""
    h = typing_any(head)
    tokens = [feat[0].reshape(-1, feat[0].shape[-2], feat[0].shape[-1]) for feat in feats]
    batch, _, channels = tokens[0].shape
    rows, cols = height // h.patch_size, width // h.patch_size
    aspect = width.to(torch.float32) / height.to(torch.float32)
    levels = []
    for stage, take in enumerate(h.intermediate_layer_idx):
        x = h.norm(tokens[take])
        x = x.permute(0, 2, 1).reshape(batch, channels, rows, cols)
        x = h.projects[stage](x)
        if h.pos_embed:
            x = _uv_embedding(x, aspect)
        levels.append(h.resize_layers[stage](x))
    scratch = h.scratch
    l1, l2, l3, l4 = (getattr(scratch, f"layer{i}_rn")(level) for i, level in enumerate(levels, start=1))
    out = scratch.refinenet4(l4, size=l3.shape[2:])
    out = scratch.refinenet3(out, l3, size=l2.shape[2:])
    out = scratch.refinenet2(out, l2, size=l1.shape[2:])
    out = scratch.refinenet1(out, l1, size=(l1.shape[2] * 2, l1.shape[3] * 2))  # its scale_factor=2
    out = scratch.output_conv1(out)
    size = (rows * h.patch_size // h.down_ratio, cols * h.patch_size // h.down_ratio)
    out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
    if h.pos_embed:
        out = _uv_embedding(out, aspect)
    logits = scratch.output_conv2(out)
    return h._apply_activation_single(logits[:, 0], h.activation)


def typing_any(module: nn.Module) -> Any:
    return module  # the package's modules: their attributes are the package's, untyped


def make_exportable(network: nn.Module) -> nn.Module:
    """Replace the size-freezing methods on this network's own instances (module docstring)."""
    vit = typing_any(network).backbone.pretrained
    if vit.rope is not None:
        vit.position_getter = _positions
        vit.rope.forward = types.MethodType(_rope_forward, vit.rope)
    vit.interpolate_pos_encoding = types.MethodType(_pos_encoding, vit)
    return network


class FusedDepthAnything3(FusedGraph):
    """``IMAGE`` uint8 [N, H, W, 3] -> ``DEPTH`` fp32 [N, H, W] (up to scale, larger = farther)
    and ``INTRINSICS`` fp32 [N, 3, 3] in the input's pixels."""

    def network_size(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(height, width) by the contract's UPPER_BOUND rule, in tensor ops."""
        return self._resizes(image)[1]

    def _resizes(self, image: torch.Tensor) -> tuple[tuple, tuple]:
        """The input processor's two resizes, each ((height, width), enlarging): the long side
        to ``size``, then each side to its nearest multiple (ties up)."""
        rule = self.spec.resize
        hw = shape_as_tensor(image)[1:3].to(torch.float64)
        scale = rule.size / torch.max(hw)
        scaled = torch.clamp(torch.round(hw * scale), min=1.0)  # half to even, as Python's round
        m = rule.multiple_of
        down = torch.floor(scaled / m) * m
        nearest = torch.clamp(torch.where(down + m - scaled <= scaled - down, down + m, down), min=float(m))
        first, second = scaled.to(torch.int64), nearest.to(torch.int64)
        # OpenCV's cubic where the image grows (the second: where either side grows), else its area
        return (first[0], first[1], scale > 1.0), (second[0], second[1], torch.any(nearest > scaled))

    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The normalized network input [N, 1, 3, h, w] (one view), and its h and w."""
        pixels = image.permute(0, 3, 1, 2).to(torch.float32)
        # uint8 between the two, as the processor's two cv2.resize calls
        for height, width, enlarge in self._resizes(image):
            pixels = area_or_cubic(pixels, height, width, enlarge)
        pixels = (pixels * self.scale + self.offset)[:, None]
        return pixels, height, width

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, height, width = self.preprocess(image)
        net = typing_any(self.network)
        feats, _ = net.backbone(pixels, cam_token=None, export_feat_layers=[])
        depth = depth_head(net.head, feats, height, width)  # [N, h, w]
        out = self.spec.output_resize
        size = (image.shape[1], image.shape[2])
        depth = F.interpolate(
            depth[:, None], size=size, mode=out.interpolation.value, align_corners=out.align_corners
        )
        depth = depth.reshape(depth.shape[0], depth.shape[2], depth.shape[3])
        return depth, self.intrinsics(net.cam_dec(feats[-1][1]), image)

    @staticmethod
    def intrinsics(pose: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The camera decoder's fields of view as the package turns them into intrinsics
        (pose_encoding_to_extri_intri), in the input's pixels: fx = (W / 2) / tan(fov_w / 2),
        principal point at the centre. The network's pixels scale to the input's by W / w,
        which leaves the same expression in the input's W."""
        hw = shape_as_tensor(image)[1:3].to(torch.float32)
        fov_h, fov_w = pose[:, 0, 7], pose[:, 0, 8]
        fy = (hw[0] / 2) / torch.clamp(torch.tan(fov_h / 2), min=1e-6)
        fx = (hw[1] / 2) / torch.clamp(torch.tan(fov_w / 2), min=1e-6)
        zero, one = torch.zeros_like(fx), torch.ones_like(fx)
        cx, cy = zero + hw[1] / 2, zero + hw[0] / 2
        rows = [
            torch.stack([fx, zero, cx], -1),
            torch.stack([zero, fy, cy], -1),
            torch.stack([zero, zero, one], -1),
        ]
        return torch.stack(rows, dim=1)
