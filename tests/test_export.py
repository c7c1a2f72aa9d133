"""Export: fidelity against the official pipelines, and the CLI's behaviour."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForDepthEstimation

from depthstream import accelerator, engine_choice, model_config, runtime
from depthstream.contract import (
    DEPTH_ANYTHING_V2_SMALL,
    METRIC_CHECKPOINTS,
    MIDAS_DPT_BEIT_BASE_384,
    MODELS,
    DepthKind,
    ModelSpec,
    Precision,
)
from depthstream.model_config import parse
from export import onnx_export
from export.__main__ import main
from export.onnx_export import relative_error
from export.repository import MANIFEST, read_manifest
from tests.helpers import photo

# Measured: 1e-5..6e-5 of range; a wrong interpolation mode or a size baked into the
# graph is 5-30% off, so this bound separates right from wrong with a wide margin.
FIDELITY_TOLERANCE = 1e-3


def official_reference(network, spec: ModelSpec, rgb: np.ndarray) -> np.ndarray:
    """The official pipeline, written independently of the exported graph: OpenCV INTER_CUBIC
    resize on RGB/255, mean/std, the transformers model, then the model's output interpolation."""
    height, width = rgb.shape[:2]
    net_h, net_w = spec.resize.network_size(height, width)
    x = cv2.resize(rgb.astype(np.float32) / 255.0, (net_w, net_h), interpolation=cv2.INTER_CUBIC)
    x = (x - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    with torch.no_grad():
        depth = network(pixel_values=torch.from_numpy(x.transpose(2, 0, 1).copy())[None]).predicted_depth
        out = spec.output_resize
        depth = F.interpolate(
            depth[:, None], (height, width), mode=out.interpolation.value, align_corners=out.align_corners
        )
    return depth[0, 0].numpy()


@pytest.fixture(scope="module")
def sessions(tiny_repository):
    exported = model_config.exported_models(tiny_repository)
    return {name: ort.InferenceSession(str(tiny_repository / name / "1" / "model.onnx")) for name in exported}


# transformers' models (Depth Anything 3 has its own tests: tests/test_da3.py)
TRANSFORMERS = {name: spec for name, spec in MODELS.items() if spec.model_type != "depth_anything_3"}
FP32_MODELS = [name for name, spec in TRANSFORMERS.items() if spec.precision == Precision.FP32]
INT8_MODELS = [name for name, spec in TRANSFORMERS.items() if spec.precision == Precision.INT8]


@pytest.fixture(scope="module")
def networks(tiny_checkpoints):
    return {
        name: AutoModelForDepthEstimation.from_pretrained(path).eval()
        for name, path in tiny_checkpoints.items()
        if name in TRANSFORMERS
    }


@pytest.mark.parametrize("name", FP32_MODELS)
@pytest.mark.parametrize(
    "width,height,photo_name",
    [
        (640, 480, "astronaut"),  # landscape webcam frame
        (360, 500, "chelsea"),  # portrait
        (31, 17, "coffee"),  # odd and tiny
        (1281, 719, "rocket"),  # odd, larger than the network input
        (1000, 400, "astronaut"),  # 2.5:1 landscape: the official size, at the ceiling
        (400, 1000, "chelsea"),  # 2.5:1 portrait
        (600, 60, "coffee"),  # 10:1, beyond the ceiling: the contract's capped size
    ],
)
def test_exported_model_matches_official_pipeline(sessions, networks, name, width, height, photo_name):
    rgb = photo(width, height, photo_name)
    depth = sessions[name].run(["DEPTH"], {"IMAGE": rgb[None]})[0]
    assert depth.shape == (1, height, width) and depth.dtype == np.float32
    reference = official_reference(networks[MODELS[name].checkpoint], MODELS[name], rgb)
    assert reference.std() > 1e-3 * abs(reference.mean()), "tiny model output must have structure"
    assert relative_error(depth[0], reference) < FIDELITY_TOLERANCE


@pytest.mark.parametrize("name", FP32_MODELS)
def test_batch_of_two_matches_each_image(sessions, networks, name):
    images = [photo(320, 240, "astronaut"), photo(320, 240, "coffee")]
    depth = sessions[name].run(["DEPTH"], {"IMAGE": np.stack(images)})[0]
    assert depth.shape == (2, 240, 320)
    for i, rgb in enumerate(images):
        assert (
            relative_error(depth[i], official_reference(networks[MODELS[name].checkpoint], MODELS[name], rgb))
            < FIDELITY_TOLERANCE
        )


@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_twin_stays_close_to_fp32_and_records_its_speed(sessions, tiny_repository, name):
    rgb = photo(320, 240, "chelsea")
    int8 = sessions[name].run(["DEPTH"], {"IMAGE": rgb[None]})[0]
    fp32 = sessions[MODELS[name].fp32_twin].run(["DEPTH"], {"IMAGE": rgb[None]})[0]
    error = relative_error(int8, fp32)
    assert 0 < error < 0.1, "INT8 should differ a little from FP32, never a lot"
    manifest = read_manifest(tiny_repository / name)
    assert manifest.fp32_ms > 0 and manifest.twin_ms > 0 and manifest.parity_error > 0
    assert manifest.correlation >= 0.999  # faithful: the bound every kept twin meets
    fp32 = read_manifest(tiny_repository / MODELS[name].fp32_twin)
    assert manifest.gflops == fp32.gflops > 0  # the same graph's work (bench.limit divides it)


def test_presets_are_multiples_of_14_and_smaller():
    sizes = [
        MODELS[n].resize.size for n in FP32_MODELS if MODELS[n].checkpoint == DEPTH_ANYTHING_V2_SMALL.name
    ]
    assert sizes[0] == 518 and all(s % 14 == 0 and s < 518 for s in sizes[1:])


@pytest.mark.parametrize("interpolation,align_corners", [("bicubic", False), ("bilinear", False)])
def test_wrong_output_interpolation_is_detectably_different(networks, interpolation, align_corners):
    """The fidelity bound is tight enough to catch the wrong output resize for Depth Anything."""
    spec = DEPTH_ANYTHING_V2_SMALL
    rgb = photo(31, 17, "coffee")
    right = official_reference(networks[spec.name], spec, rgb)
    wrong_spec = ModelSpec(
        **{
            **spec.__dict__,
            "output_resize": type(spec.output_resize)(
                type(spec.output_resize.interpolation)(interpolation), align_corners
            ),
        }
    )
    wrong = official_reference(networks[spec.name], wrong_spec, rgb)
    assert relative_error(wrong, right) > FIDELITY_TOLERANCE


@pytest.mark.parametrize(
    "height,width,expected",
    [
        (480, 640, (518, 686)),  # 518 x 690.7 -> nearest multiple of 14
        (500, 360, (714, 518)),  # 719.4 / 14 = 51.4 -> 51 * 14
        (17, 31, (518, 938)),  # 944.6 / 14 = 67.5 (below .5) -> 67 * 14
        (518, 518, (518, 518)),
    ],
)
def test_depth_anything_network_size(height, width, expected):
    got = DEPTH_ANYTHING_V2_SMALL.resize.network_size(height, width)
    assert got[0] % 14 == 0 and got[1] % 14 == 0 and min(got) >= 518
    assert got == expected


def test_midas_network_size_is_fixed():
    assert MIDAS_DPT_BEIT_BASE_384.resize.network_size(17, 31) == (384, 384)


# --- the command line ------------------------------------------------------------------------


def run_export(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_offline_without_weights_names_both_ways_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, text = run_export(capsys, "--output", str(tmp_path / "repo"))
    assert code == 2
    assert "--weights DIR" in text and "--random-weights" in text
    assert "Traceback" not in text
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_missing_weights_directory_is_a_clear_error(tmp_path, capsys):
    code, text = run_export(
        capsys,
        "--model",
        "depth_anything_v2_small",
        "--weights",
        str(tmp_path / "nowhere"),
        "--output",
        str(tmp_path / "repo"),
    )
    assert code == 2 and "no such directory" in text


def test_wrong_architecture_is_refused(tiny_checkpoints, tmp_path, capsys):
    code, text = run_export(
        capsys,
        "--model",
        "midas_dpt_beit_base_384",
        "--weights",
        str(tiny_checkpoints["depth_anything_v2_small"]),
        "--output",
        str(tmp_path / "repo"),
    )
    assert code == 2 and "needs DPTForDepthEstimation" in text
    assert not (tmp_path / "repo" / "midas_dpt_beit_base_384").exists()


@pytest.mark.parametrize(
    "model,weights,says",
    [
        (
            "depth_anything_v2_metric_indoor_small",
            "depth_anything_v2_small",
            "holds a relative depth checkpoint",
        ),
        (
            "depth_anything_v2_small",
            "depth_anything_v2_metric_indoor_small",
            "holds a metric depth checkpoint",
        ),
        ("depth_anything_v2_metric_outdoor_small", "depth_anything_v2_metric_indoor_small", "reaches 20 m"),
    ],
)
def test_a_checkpoint_of_the_other_depth_kind_is_refused(
    tiny_checkpoints, tmp_path, capsys, model, weights, says
):
    """Relative and metric Depth Anything share an architecture: only the config tells them apart."""
    args = ("--model", model, "--weights", str(tiny_checkpoints[weights]), "--output", str(tmp_path / "repo"))
    code, text = run_export(capsys, *args)
    assert code == 2 and says in text
    assert not (tmp_path / "repo" / model).exists()


@pytest.mark.parametrize("name", sorted(METRIC_CHECKPOINTS))
def test_a_metric_model_answers_in_metres_within_its_range(sessions, tiny_repository, name):
    spec = MODELS[name]
    depth = sessions[name].run(["DEPTH"], {"IMAGE": photo(640, 480, "astronaut")[None]})[0]
    assert spec.depth is DepthKind.METRIC and spec.max_depth_m in (20, 80)
    # the random test head is kept out of the sigmoid's flat ends: depth spreads over the range
    assert depth.min() > 0 and depth.max() < spec.max_depth_m
    assert depth.max() - depth.min() > 0.1 * spec.max_depth_m
    config = parse((tiny_repository / name / "config.pbtxt").read_text())
    assert config.parameters["depth_kind"].string_value == "metric"
    assert config.parameters["depth_units"].string_value == "m"
    assert config.parameters["depth_max_m"].string_value == str(spec.max_depth_m)


def test_weights_without_model_is_a_usage_error(tmp_path, capsys):
    assert main(["--weights", str(tmp_path)]) == 2
    assert "holds one checkpoint: name it with --model" in capsys.readouterr().err


def midas_export_args(checkpoints, output) -> list[str]:
    """The tiny MiDaS checkpoint into ``output``, FP32 only (fast)."""
    name = "midas_dpt_beit_base_384"
    return ["--model", name, "--weights", str(checkpoints[name]), "--output", str(output), "--int8", "never"]


def test_up_to_date_model_is_skipped_unless_forced(tiny_checkpoints, tmp_path, capsys):
    args = midas_export_args(tiny_checkpoints, tmp_path / "repo")
    assert run_export(capsys, *args)[0] == 0
    onnx_file = tmp_path / "repo" / "midas_dpt_beit_base_384" / "1" / "model.onnx"
    first = onnx_file.stat().st_mtime_ns
    code, text = run_export(capsys, *args)
    assert code == 0 and "up to date" in text and onnx_file.stat().st_mtime_ns == first
    code, text = run_export(capsys, *args, "--force")
    assert code == 0 and "up to date" not in text and onnx_file.stat().st_mtime_ns != first


def test_failed_parity_leaves_previous_model_and_no_debris(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    args = midas_export_args(tiny_checkpoints, repo)
    assert run_export(capsys, *args)[0] == 0
    before = (repo / "midas_dpt_beit_base_384" / MANIFEST).read_text()
    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", 0.0)  # every export now "differs"
    code, text = run_export(capsys, *args, "--force")
    assert code == 2 and "refusing to write" in text
    assert sorted(p.name for p in repo.iterdir()) == ["midas_dpt_beit_base_384"]
    assert (repo / "midas_dpt_beit_base_384" / MANIFEST).read_text() == before


def test_random_weights_are_recorded_for_bridge_and_page(tmp_path, capsys, monkeypatch):
    from export import architectures

    monkeypatch.setattr(architectures, "build_full_size", architectures.build_tiny)  # seconds, not minutes
    code, text = run_export(
        capsys,
        "--model",
        "depth_anything_v2_small",
        "--random-weights",
        "--output",
        str(tmp_path / "repo"),
        "--int8",
        "never",
    )
    assert code == 0 and "MEANINGLESS" in text
    model_dir = tmp_path / "repo" / "depth_anything_v2_small"
    assert read_manifest(model_dir).random_weights
    assert model_config.is_random_weights(model_config.parse((model_dir / "config.pbtxt").read_text()))
    assert json.loads((model_dir / MANIFEST).read_text())["source"] == "random"


def summary_rows(output: str) -> dict[str, list[str]]:
    """The summary table's rows by model, cells split on the table's column gaps."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["model", "network", "input"])
    table = lines[start : lines.index("", start)]
    assert set(table[1]) <= {"-", " "}
    rows = [re.split(r"\s{2,}", line.strip()) for line in table[2:]]
    return {cells[0]: cells for cells in rows}  # a twin candidate dropped: "name_int8 (static QDQ)"


def test_the_summary_table_says_what_was_written_how_exact_and_how_fast(tiny_checkpoints, tmp_path, capsys):
    repo = tmp_path / "repo"
    name = "midas_dpt_beit_base_384"
    args = [
        "--model",
        name,
        "--weights",
        str(tiny_checkpoints[name]),
        "--output",
        str(repo),
        "--int8",
        "always",
    ]
    code, output = run_export(capsys, *args)
    assert code == 0
    rows = summary_rows(output)
    kept = read_manifest(repo / f"{name}_int8").method
    (other,) = {"dynamic", "static QDQ"} - {kept}
    assert sorted(rows) == [name, f"{name}_int8", f"{name}_int8 ({other})"]
    dropped = rows.pop(f"{name}_int8 ({other})")
    assert dropped[5].startswith(
        (f"dropped: the faster twin here is {name}_int8 ({kept}) (", "dropped: not faithful: ")
    )
    assert dropped[6] == "not written"
    for model, cells in rows.items():
        model_dir = repo / model
        manifest = read_manifest(model_dir)
        served = engine_choice.for_model(model_dir, [accelerator.CPU])  # measured here, as served
        network, parity, ms, served_by, twin, status, weights = cells[1:]
        assert network == "384x384"
        assert parity.startswith(f"{manifest.parity_error:.1e} vs ")
        assert float(ms) == pytest.approx(served.speed.ms, abs=0.5)
        assert served_by == served.why.split(":")[0] and served_by in ("ONNX Runtime", "OpenVINO")
        assert status == "exported" and weights == "checkpoint"
        assert twin == (
            "-"
            if model == name
            else f"kept ({manifest.method}): {manifest.twin_ms:.0f} vs {manifest.fp32_ms:.0f} ms FP32"
        )
    assert f"Each model is in {repo}/<model>/" in output
    assert "Quantization parameters" not in output and "Ignore MatMul" not in output  # the quantizer is quiet
    code, again = run_export(capsys, *args)
    assert code == 0 and all(cells[6] == "up to date" for cells in summary_rows(again).values())


def test_an_int8_twin_that_is_not_faster_is_dropped_and_the_table_says_why(
    tiny_checkpoints, tmp_path, capsys, monkeypatch
):
    name = "midas_dpt_beit_base_384"
    args = ["--model", name, "--weights", str(tiny_checkpoints[name]), "--output", str(tmp_path / "repo")]
    real_compare = runtime.compare

    def int8_slower(candidates, providers, threads=None):
        speeds, warning = real_compare(candidates, providers, threads)
        # the staged INT8 twin
        paths = [item[0] if isinstance(item, tuple) else item for item in candidates]
        slower = ["_int8" in Path(path).parent.parent.name for path in paths]
        return [
            runtime.Speed(speed.ms + 1000 if late else speed.ms, speed.machine)
            for speed, late in zip(speeds, slower, strict=True)
        ], warning

    monkeypatch.setattr(runtime, "compare", int8_slower)
    code, output = run_export(capsys, *args)
    assert code == 0
    for method in ("dynamic", "static QDQ"):
        cells = summary_rows(output)[f"{name}_int8 ({method})"]
        said = ("dropped: not faster here",) + (("dropped: not faithful",) if method == "static QDQ" else ())
        assert cells[5].startswith(said) and cells[6] == "not written"
    assert not (tmp_path / "repo" / f"{name}_int8").exists()
    # the verdict is remembered: the next run neither quantizes nor times it again...
    timed = []
    monkeypatch.setattr(runtime, "compare", lambda *a, **k: timed.append(a) or int8_slower(*a, **k))
    code, again = run_export(capsys, *args, "--brief")
    assert code == 0 and timed == []
    assert again.strip().endswith(
        "models up to date in " + str(tmp_path / "repo") + " (without --brief: the table)"
    )
    # --brief (make demo) says so, and how to judge it again now
    assert (
        f"{name}_int8 (dynamic): dropped before: not faster here" in again
        and "make export EXPORT_ARGS=--force" in again
    )
    # ...until asked again
    code, forced = run_export(capsys, *args, "--force")
    assert code == 0 and summary_rows(forced)[f"{name}_int8 (static QDQ)"][6] == "not written" and timed
    # ...or until the verdict is a week old: one unlucky timing does not decide for good
    timed.clear()
    marker = tmp_path / "repo" / f".dropped-{name}_int8-dynamic.json"
    verdict = json.loads(marker.read_text())
    verdict["judged_at"] -= 8 * 24 * 3600
    marker.write_text(json.dumps(verdict))
    code, aged = run_export(capsys, *args, "--brief")
    assert code == 0 and timed, "a week-old verdict is judged again"
