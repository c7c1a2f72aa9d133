"""``python -m export --checkpoint``: any transformers depth checkpoint, its preprocessing read
from its own configs, served within the parity bound of ``transformers.pipeline``; and what is
refused, with the repository left byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from depthstream import model_config
from depthstream.contract import DepthKind, Interpolation, Resize, ResizeRule, spec_of
from export import pil_resize
from export.__main__ import main as export_main
from export.any_checkpoint import derived_name
from export.graph import FusedDepthModel
from tests.helpers import photo
from tests.tiny_checkpoints import FAMILIES, TINY_FOV_DEG, save_tiny

# the bound: against transformers.pipeline("depth-estimation") on the same checkpoint
MIN_CORRELATION = 0.999
MAX_ERROR = 1e-2  # of the reference's 2nd-98th percentile range
# three photographs: landscape, portrait, and a 2.3:1 strip
SIZES = [(640, 480), (360, 500), (460, 200)]
KINDS = {
    "depth_anything": DepthKind.RELATIVE,
    "depth_anything_metric": DepthKind.METRIC,
    "dpt_vit": DepthKind.RELATIVE,
    "dpt_beit": DepthKind.RELATIVE,
    "dpt_dinov2": DepthKind.RELATIVE,
    "glpn": DepthKind.METRIC,
    "depth_pro": DepthKind.METRIC,
}


def parity(depth: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(correlation, max difference as a fraction of the reference's 2nd-98th percentile range)."""
    low, high = np.percentile(reference, [2, 98])
    correlation = float(np.corrcoef(depth.ravel(), reference.ravel())[0, 1])
    return correlation, float(np.abs(depth - reference).max() / max(high - low, 1e-12))


def depth_pro_reference(checkpoint: Path, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth Pro as transformers runs it, its processor written out (DepthProImageProcessor imports
    torchvision): rescale and normalize, then torch's bilinear resize without antialiasing; the
    model's forward; post_process_depth_estimation's maths with the image's size as target.
    (depth in metres [H, W], intrinsics [3, 3])."""
    from transformers import AutoModelForDepthEstimation

    processor = json.loads((checkpoint / "preprocessor_config.json").read_text())
    height, width = rgb.shape[:2]
    mean, std = np.float32(processor["image_mean"]), np.float32(processor["image_std"])
    normalized = (rgb.astype(np.float32) * np.float32(processor["rescale_factor"]) - mean) / std
    pixels = torch.from_numpy(normalized.transpose(2, 0, 1))[None]
    size = (processor["size"]["height"], processor["size"]["width"])
    pixels = torch.nn.functional.interpolate(
        pixels, size=size, mode="bilinear", align_corners=False, antialias=False
    )
    model = AutoModelForDepthEstimation.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        out = model(pixel_values=pixels)
    fov = out.field_of_view[0]
    focal = 0.5 * width / torch.tan(0.5 * torch.deg2rad(fov))
    depth = out.predicted_depth[0] * width / focal
    depth = torch.nn.functional.interpolate(depth[None, None], size=(height, width), mode="bilinear")[0, 0]
    depth = 1.0 / torch.clamp(depth, min=1e-4, max=1e4)
    f = float(focal)
    return depth.numpy(), np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])


def pipeline_depth(checkpoint: Path, rgb: np.ndarray) -> np.ndarray:
    from transformers import pipeline

    if json.loads((checkpoint / "config.json").read_text())["model_type"] == "depth_pro":
        return depth_pro_reference(checkpoint, rgb)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the processor's own: no torchvision, PIL backend
        depth_pipeline = pipeline("depth-estimation", model=str(checkpoint))
        return depth_pipeline(Image.fromarray(rgb))["predicted_depth"].numpy()


def tree_digest(root: Path) -> str:
    """Every file's path and bytes under ``root``: byte for byte, or not."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: save_tiny(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def added_repository(family_checkpoints, tmp_path_factory) -> Path:
    """Every family exported with the real command (``--int8 never``: twins are judged in one
    test of their own), into one repository."""
    repository = tmp_path_factory.mktemp("added") / "model_repository"
    for family, checkpoint in family_checkpoints.items():
        code = export_main(["--checkpoint", str(checkpoint), "--output", str(repository), "--int8", "never"])
        assert code == 0, family
    return repository


# --- the resize rules and Pillow's resampling, against independent references -------------------
def transformers_size(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
    """transformers' DPT get_resize_output_image_size with keep_aspect_ratio, called directly."""
    from transformers.models.dpt.image_processing_pil_dpt import get_resize_output_image_size

    got = get_resize_output_image_size(np.zeros((3, height, width)), (size, size), True, multiple)
    return got.height, got.width


@pytest.mark.parametrize(
    "height,width", [(480, 640), (500, 360), (200, 460), (37, 91), (1080, 1920), (518, 518)]
)
def test_the_closest_rule_is_transformers_own_and_the_graph_computes_it(height, width):
    rule = Resize(518, ResizeRule.CLOSEST, 14)
    if max(height, width) / min(height, width) <= 2.5:  # within the ceiling: exactly the processor's
        assert rule.network_size(height, width) == transformers_size(height, width, 518, 14)
    assert max(rule.network_size(height, width)) <= rule.max_side
    spec = spec_of("depth_anything_v2_small")
    from dataclasses import replace

    fused = FusedDepthModel(torch.nn.Identity(), replace(spec, resize=rule))
    got = fused.network_size(torch.zeros(1, height, width, 3, dtype=torch.uint8))
    assert tuple(int(side) for side in got) == rule.network_size(height, width)


def test_the_divisor_rule_rounds_down_and_bounds_the_long_side():
    rule = Resize(1024, ResizeRule.DIVISOR, 32)
    assert rule.network_size(480, 640) == (480, 640)
    assert rule.network_size(500, 360) == (480, 352)
    assert rule.network_size(1080, 1920) == (576, 1024)  # scaled down to the ceiling first
    assert rule.network_size(5, 7) == (32, 32)  # never an empty network input
    from dataclasses import replace

    fused = FusedDepthModel(torch.nn.Identity(), replace(spec_of("depth_anything_v2_small"), resize=rule))
    for height, width in [(480, 640), (500, 360), (1080, 1920), (5, 7), (1920, 33)]:
        got = fused.network_size(torch.zeros(1, height, width, 3, dtype=torch.uint8))
        assert tuple(int(side) for side in got) == rule.network_size(height, width)


@pytest.mark.parametrize("interpolation", [i for i in Interpolation if i is not Interpolation.AREA])  # PIL's
@pytest.mark.parametrize("height,width", [(518, 686), (100, 77), (512, 128)])
def test_pillow_resampling_in_the_graph_is_pillows(interpolation, height, width):
    image = photo(450, 300)
    pil = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "box": Image.BOX}
    reference = np.asarray(Image.fromarray(image).resize((width, height), resample=pil[interpolation]))
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    got = pil_resize.resize(pixels, height, width, interpolation)[0].permute(1, 2, 0).numpy()
    difference = np.abs(got - reference.astype(np.float32))
    assert difference.max() <= 1  # a rounding tie, at most
    assert (difference > 0).mean() < 1e-2  # box averages tie most: 0.4% of pixels at 100x77


def test_a_name_is_derived_from_the_id_or_the_directory():
    assert derived_name("Intel/dpt-large") == "dpt_large"
    assert derived_name("depth-anything/Depth-Anything-V2-Base-hf") == "depth_anything_v2_base"
    assert derived_name("/home/me/My Fine-Tune!/") == "my_fine_tune"
    assert derived_name("2024-model") == "2024_model"


# --- every family, exported by the real command, against the pipeline ---------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_matches_the_transformers_pipeline(family, family_checkpoints, added_repository):
    checkpoint = family_checkpoints[family]
    name = derived_name(str(checkpoint))
    config = model_config.parse((added_repository / name / "config.pbtxt").read_text())
    spec = model_config.spec_of(config)
    assert spec.added and spec.depth is KINDS[family] and spec.hub_id == str(checkpoint.resolve())
    assert config.parameters["added"].string_value == "true"
    session = ort.InferenceSession(str(added_repository / name / "1" / "model.onnx"))
    for width, height in SIZES:
        rgb = photo(width, height)
        depth = session.run(["DEPTH"], {"IMAGE": rgb[None]})[0][0]
        correlation, error = parity(depth, pipeline_depth(checkpoint, rgb))
        logging.getLogger(__name__).info(
            "%s %dx%d: r=%.6f max %.1e", family, width, height, correlation, error
        )
        assert correlation >= MIN_CORRELATION and error <= MAX_ERROR, (
            family,
            width,
            height,
            correlation,
            error,
        )


def test_depth_pro_serves_its_field_of_view_as_intrinsics(family_checkpoints, added_repository):
    """Its FOV head becomes INTRINSICS (fx = fy = W / (2 tan(fov / 2)), the principal point at the
    centre), within 1e-3 of transformers' own post-processing, at each size; metres for depth."""
    checkpoint = family_checkpoints["depth_pro"]
    config = model_config.parse((added_repository / "depth_pro" / "config.pbtxt").read_text())
    spec = model_config.spec_of(config)
    assert spec.intrinsics and config.parameters["intrinsics"].string_value == "true"
    assert [output.name for output in config.output] == ["DEPTH", "INTRINSICS"]
    session = ort.InferenceSession(str(added_repository / "depth_pro" / "1" / "model.onnx"))
    for width, height in SIZES:
        rgb = photo(width, height)
        _, camera = session.run(["DEPTH", "INTRINSICS"], {"IMAGE": rgb[None]})
        _, want = depth_pro_reference(checkpoint, rgb)
        assert np.abs(camera[0] - want).max() / want[0, 0] <= 1e-3, (camera[0], want)
        hfov = math.degrees(2 * math.atan(width / (2 * camera[0, 0, 0])))
        assert abs(hfov - TINY_FOV_DEG) < 5  # the tiny head's field of view, in degrees


def test_depth_pro_without_its_fov_head_is_refused(family_checkpoints, tmp_path):
    import shutil

    checkpoint = tmp_path / "no_fov"
    shutil.copytree(family_checkpoints["depth_pro"], checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "use_fov_model": False}))
    assert export_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "repo")]) == 2


def test_families_that_keep_the_aspect_get_presets(family_checkpoints, added_repository):
    served = set(model_config.exported_models(added_repository))
    assert {"depth_anything", "depth_anything_56", "depth_anything_28"} <= served
    assert not any(name.startswith("dpt_vit_") for name in served)  # a fixed size: no presets
    preset = model_config.spec_of(
        model_config.parse((added_repository / "depth_anything_56" / "config.pbtxt").read_text())
    )
    assert preset.resize.size == 56 and preset.checkpoint == "depth_anything"


def test_a_metric_family_carries_its_ceiling(added_repository):
    spec = model_config.spec_of(model_config.parse((added_repository / "glpn" / "config.pbtxt").read_text()))
    assert spec.depth_meaning == {"kind": "metric", "units": "m", "larger": "farther", "max_m": 8}
    assert spec.resize.rule is ResizeRule.DIVISOR and spec.resize.multiple_of == 64


def test_list_and_remove(added_repository, tmp_path, capsys):
    import shutil

    repository = tmp_path / "copy"
    shutil.copytree(added_repository, repository)
    assert export_main(["--list", "--output", str(repository)]) == 0
    listing = capsys.readouterr().out
    assert "glpn" in listing and "metric" in listing and "added" in listing
    assert export_main(["--remove", "depth_anything", "--output", str(repository)]) == 0
    assert not any(
        name.startswith("depth_anything") and "metric" not in name
        for name in model_config.exported_models(repository)
    )
    assert "glpn" in model_config.exported_models(repository)


# --- refused, with the reason, the repository untouched ------------------------------------------
def broken(tmp_path: Path, name: str, config: dict | None, weights: str | None = "model.safetensors") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    if weights:
        (directory / weights).write_bytes(b"\0" * 16)
    return directory


REFUSALS = {
    "no_config": (None, "model.safetensors", "no config.json"),
    "not_depth": ({"model_type": "bert"}, "model.safetensors", "is not a depth model"),
    "prompt_depth": ({"model_type": "prompt_depth_anything"}, "model.safetensors", "prompt depth"),
    "remote_code": (
        {"model_type": "dpt", "auto_map": {"AutoModel": "x.Y"}},
        "model.safetensors",
        "remote code",
    ),
    "pickle_only": ({"model_type": "dpt"}, "pytorch_model.bin", "pickle"),
    "unknown_family": ({"model_type": "chmv2"}, "model.safetensors", "--depth relative|metric"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_cannot_be_served_is_refused_and_the_repository_is_untouched(
    case, added_repository, tmp_path, capsys
):
    config, weights, reason = REFUSALS[case]
    directory = broken(tmp_path, case, config, weights)
    before = tree_digest(added_repository)
    assert export_main(["--checkpoint", str(directory), "--output", str(added_repository)]) == 2
    error = capsys.readouterr().err
    assert reason in error and "is as it was" in error
    assert tree_digest(added_repository) == before


def test_a_name_served_for_another_checkpoint_is_refused(family_checkpoints, added_repository, capsys):
    before = tree_digest(added_repository)
    other = family_checkpoints["glpn"]
    code = export_main(["--checkpoint", str(other), "--name", "dpt_vit", "--output", str(added_repository)])
    assert code == 2 and "served already" in capsys.readouterr().err
    assert tree_digest(added_repository) == before
    code = export_main(
        ["--checkpoint", str(other), "--name", "depth_anything_v2_small", "--output", str(added_repository)]
    )
    assert code == 2 and "curated model" in capsys.readouterr().err


def test_a_processor_the_graph_cannot_reproduce_is_refused(family_checkpoints, tmp_path, capsys):
    import shutil

    directory = tmp_path / "nearest"
    shutil.copytree(family_checkpoints["dpt_vit"], directory)
    processor = json.loads((directory / "preprocessor_config.json").read_text())
    (directory / "preprocessor_config.json").write_text(json.dumps({**processor, "resample": 0}))
    repository = tmp_path / "repo"
    assert export_main(["--checkpoint", str(directory), "--output", str(repository)]) == 2
    assert "nearest" in capsys.readouterr().err
    assert not repository.exists() or not any(repository.iterdir())


def test_an_unknown_family_is_served_once_its_depth_is_said():
    from export.any_checkpoint import Overrides, family_depth

    kind, ceiling = family_depth("chmv2", {}, Overrides(depth=DepthKind.METRIC, max_depth=40))
    assert (kind, ceiling) == (DepthKind.METRIC, 40)
    assert math.isclose(family_depth("glpn", {"max_depth": 10}, Overrides())[1] or 0, 10)


def test_the_repository_flavours_carry_added_models(added_repository, tmp_path):
    from export import flavours

    written = flavours.write_cpu(added_repository, tmp_path / "cpu")
    assert {path.parent.name for path in written} == set(model_config.exported_models(added_repository))
    config = model_config.parse((tmp_path / "cpu" / "glpn" / "config.pbtxt").read_text())
    assert (
        model_config.spec_of(config).depth is DepthKind.METRIC
        and config.parameters["added"].string_value == "true"
    )
    (openvino,) = [
        p for p in flavours.write_openvino(added_repository, tmp_path / "ov") if p.parent.name == "glpn"
    ]
    assert model_config.spec_of(model_config.parse(openvino.read_text())).name == "glpn"


def test_the_worst_case_bench_takes_added_checkpoints_too(added_repository):
    from bench.worst_case import worst_case_models

    models = worst_case_models(added_repository)
    assert models[:2] == ("depth_anything_v2_small", "midas_dpt_beit_base_384")
    # each added checkpoint at its full network size; no preset, no twin
    assert set(models[2:]) == {derived_name(family) for family in FAMILIES}


def test_a_failure_in_staging_leaves_the_repository_as_it_was(
    family_checkpoints, added_repository, monkeypatch, capsys
):
    from export import onnx_export

    before = tree_digest(added_repository)
    monkeypatch.setattr(onnx_export, "PIL_PARITY_TOLERANCE", 0.0)  # every export now "differs"
    monkeypatch.setattr("export.exporter.PIL_PARITY_TOLERANCE", 0.0)
    code = export_main(
        ["--checkpoint", str(family_checkpoints["dpt_vit"]), "--output", str(added_repository)]
    )
    assert code == 2 and "refusing to write" in capsys.readouterr().err
    assert tree_digest(added_repository) == before  # dpt_vit as it was, no staging left behind


def test_a_fixed_box_is_rounded_to_the_multiple_as_transformers_does(tmp_path):
    from transformers import DPTImageProcessor
    from transformers.models.dpt.image_processing_pil_dpt import get_resize_output_image_size

    from export.any_checkpoint import processor_resize

    processor = DPTImageProcessor(size={"height": 384, "width": 512}, ensure_multiple_of=14)
    rule = processor_resize(processor, "dpt")
    want = get_resize_output_image_size(np.zeros((3, 480, 640)), (384, 512), False, 14)
    assert rule.network_size(480, 640) == (want.height, want.width) == (378, 518)


def test_a_processor_the_graph_does_not_know_is_refused():
    from export.any_checkpoint import processor_resize
    from export.checkpoints import CheckpointError

    class ZoeDepthImageProcessor:  # another family's processor
        resample = 3

    with pytest.raises(CheckpointError, match="ZoeDepthImageProcessor"):
        processor_resize(ZoeDepthImageProcessor(), "chmv2")
