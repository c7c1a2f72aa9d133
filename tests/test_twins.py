"""Reduced-precision twins: at most one per model, the fastest faithful one; a twin past the
fidelity bound is dropped with one line and the export goes on.

No machine here has a BF16 matrix engine, so the BF16 path is driven with OpenVINO's BF16
capability said present: its hint then runs FP32 (what OpenVINO does on AVX2), which proves the
mechanism (built, judged, kept or dropped, served by OpenVINO with the BF16 hint and the pre/post
nodes marked FP32), not BF16's fidelity or speed: those are measured where the engine exists.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from depthstream import engines, rounds, runtime
from depthstream.contract import MODELS, twins_of
from depthstream.model_config import CONFIG_FILE, ONNX_FILE, VERSION, parse
from export import twins
from export.__main__ import main
from export.repository import read_manifest
from export.twins import Fidelity

NAME = "midas_dpt_beit_base_384"
GOOD, BAD = Fidelity(0.9999, 1e-2), Fidelity(0.964, 0.41)  # the BF16 whole-graph figure: broken


def export(checkpoints, output: Path, *extra: str) -> int:
    return main(["--model", NAME, "--weights", str(checkpoints[NAME]), "--output", str(output), *extra])


def test_an_int8_twin_past_the_bound_is_dropped_in_one_line_and_the_export_goes_on(
    tiny_checkpoints, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(twins, "measure_fidelity", lambda *args: BAD)
    assert export(tiny_checkpoints, tmp_path / "repo") == 0
    output = capsys.readouterr().out
    lines = [row for row in output.splitlines() if row.strip().startswith(f"{NAME}_int8 (")]
    assert len(lines) == 2, "both INT8 candidates, dynamic and static, each in one line"
    for line in lines:
        assert "dropped: not faithful: correlation 0.9640" in line and "not written" in line
    assert (tmp_path / "repo" / NAME / VERSION / ONNX_FILE).is_file()
    assert not (tmp_path / "repo" / f"{NAME}_int8").exists()
    assert "export: no BF16 twins: " in output or engines.bf16_capable()


def slowed(precision_to_ms: dict[str, float], monkeypatch) -> None:
    """Timings as a machine with a BF16 engine would give them: each twin's run time set by its
    kind (FP32 100 ms), whatever it really took here."""
    real = runtime.compare

    def compare(items, providers, threads=None):
        speeds, warning = real(items, providers, threads)
        pairs = [item if isinstance(item, tuple) else (item, runtime.ONNXRUNTIME) for item in items]
        named = [Path(path).parent.parent.name for path, _ in pairs]
        kinds = [next((k for k in ("int8", "bf16") if f"_{k}" in name), "fp32") for name in named]
        return [
            runtime.Speed(precision_to_ms[k], s.machine) for k, s in zip(kinds, speeds, strict=True)
        ], warning

    monkeypatch.setattr(runtime, "compare", compare)
    monkeypatch.setattr(
        runtime,
        "measure",
        lambda path, providers, threads=None, runner=None: (
            runtime.Speed(precision_to_ms["fp32"], "here"),
            None,
        ),
    )


@pytest.fixture
def bf16_said_capable(monkeypatch):
    if engines.openvino_version() is None:
        pytest.fail("OpenVINO is a requirement (requirements.txt): make setup")
    monkeypatch.setattr(engines, "bf16_capable", lambda: True)


def test_a_faster_faithful_bf16_twin_wins_and_is_served_by_openvino_with_its_hint(
    tiny_checkpoints, tmp_path, monkeypatch, bf16_said_capable, caplog
):
    from serving.repository import generate

    slowed({"fp32": 100.0, "int8": 70.0, "bf16": 30.0}, monkeypatch)
    repo = tmp_path / "repo"
    assert export(tiny_checkpoints, repo) == 0
    int8, bf16 = (spec.name for spec in twins_of(MODELS[NAME]))
    assert (repo / bf16).is_dir() and not (repo / int8).exists(), "one twin per model: the faster"
    manifest = read_manifest(repo / bf16)
    assert manifest.twin_ms == pytest.approx(30.0) and manifest.fp32_ms == pytest.approx(100.0)
    assert manifest.correlation >= twins.MIN_CORRELATION and manifest.parity_error <= twins.MAX_ERROR
    # the same graph, not a second copy of the weights
    assert os.path.samefile(repo / bf16 / VERSION / ONNX_FILE, repo / NAME / VERSION / ONNX_FILE)
    assert "the faster twin here is" in (repo / f".dropped-{int8}-dynamic.json").read_text()
    static = (repo / f".dropped-{int8}-static-qdq.json").read_text()
    assert "the faster twin here is" in static or "not faithful" in static  # the tiny network's
    monkeypatch.undo()
    monkeypatch.setattr(engines, "bf16_capable", lambda: True)
    generate(repo, tmp_path / "served", [NAME, bf16], threads=1)
    config = parse((tmp_path / "served" / bf16 / CONFIG_FILE).read_text())
    assert (config.parameters["engine"].string_value, config.parameters["precision"].string_value) == (
        "openvino",
        "bf16",
    )
    session = engines.OpenVinoSession(repo / bf16 / VERSION / ONNX_FILE, 1, engines.InferencePrecision.BF16)
    assert session.kept_fp32 > 100 and session.get_providers() == ["OpenVINO CPU bf16"]
    # where OpenVINO runs no BF16, a BF16 twin exported elsewhere is left out, and the log says so
    monkeypatch.setattr(engines, "bf16_capable", lambda: False)
    with caplog.at_level(logging.WARNING, logger="serving.repository"):
        assert generate(repo, tmp_path / "elsewhere", threads=1) == [NAME]
    assert any(f"{bf16}: left out" in record.message for record in caplog.records)


def test_a_faster_int8_twin_wins_over_bf16(
    tiny_checkpoints, tmp_path, monkeypatch, bf16_said_capable, capsys
):
    slowed({"fp32": 100.0, "int8": 40.0, "bf16": 60.0}, monkeypatch)
    repo = tmp_path / "repo"
    assert export(tiny_checkpoints, repo) == 0
    assert (repo / f"{NAME}_int8").is_dir() and not (repo / f"{NAME}_bf16").exists()
    output = capsys.readouterr().out
    assert f"dropped: the faster twin here is {NAME}_int8 (dynamic) (40 vs 60 ms)" in output
    assert read_manifest(repo / f"{NAME}_int8").method == "dynamic"  # the first of equals


def candidate(ms: float, per_round: list[float], method: str = "dynamic") -> twins.Candidate:
    """A faithful INT8 candidate whose rounds ran at ``per_round`` x FP32's speed."""
    speedup = rounds.ratio(per_round, [1.0] * len(per_round))
    return twins.Candidate(MODELS[f"{NAME}_int8"], fidelity=GOOD, ms=ms, method=method, speedup=speedup)


def test_a_twin_is_kept_only_when_faster_by_ten_percent_and_by_more_than_its_spread():
    kept, why = twins.verdicts(100.0, [candidate(80.0, [1.3, 1.25, 1.2, 1.3, 1.28])])
    assert kept is not None and kept.method == "dynamic" and why == {}
    noise, _ = twins.verdicts(100.0, [candidate(95.0, [1.06, 1.04, 1.05, 1.07, 1.05])])
    assert noise is None, "5% faster: not worth its fidelity"
    spread, why = twins.verdicts(100.0, [candidate(88.0, [1.5, 1.4, 1.15, 0.9, 0.8, 1.12])])
    assert spread is None, "a median of 1.13x whose lower quartile is below 1: noise"
    said = why[f"{NAME}_int8 (dynamic)"]
    assert said.startswith("not faster here by 10% and its spread (88 vs 100 ms FP32; 1.1")
    assert "[0.96-" in said and "6 rounds] FP32's speed)" in said


def test_of_two_faithful_fast_int8_candidates_the_faster_is_kept_and_the_other_said_why():
    static = candidate(70.0, [1.4] * 5, method=twins.STATIC)
    kept, why = twins.verdicts(100.0, [candidate(80.0, [1.25] * 5), static])
    assert kept is static
    assert why == {
        f"{NAME}_int8 (dynamic)": f"the faster twin here is {NAME}_int8 (static QDQ) (70 vs 80 ms)"
    }


def test_the_static_twin_quantizes_the_networks_weights_only(tiny_repository, tmp_path):
    """Its MatMuls with constant weights, and nothing of the fused pre/post processing, of
    attention's products of two activations or of the convolutions."""
    import onnx

    fp32 = tiny_repository / NAME / VERSION / ONNX_FILE
    targets = set(twins.static_targets(fp32))
    graph = onnx.load(str(fp32)).graph
    constants = {init.name for init in graph.initializer} | {
        n.output[0] for n in graph.node if n.op_type == "Constant"
    }
    weights = {
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and n.name.startswith(twins.NETWORK_PREFIX) and n.input[1] in constants
    }
    assert targets == weights and weights
    assert any(n.op_type == "MatMul" and n.input[1] not in constants for n in graph.node), "attention"
    twins.build(MODELS[f"{NAME}_int8"], fp32, tmp_path / "static.onnx", twins.STATIC)
    quantized = onnx.load(str(tmp_path / "static.onnx")).graph
    produced_by = {out: node for node in quantized.node for out in node.output}
    matrix_nodes = [n for n in quantized.node if n.op_type in ("Conv", "MatMul")]
    for node in matrix_nodes:
        feeds = [produced_by[i].op_type for i in node.input if i in produced_by]
        assert ("DequantizeLinear" in feeds) == (node.name in targets), node.name
