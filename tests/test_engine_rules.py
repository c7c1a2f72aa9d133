"""The rules that choose a runtime and a twin, on made-up figures (fast: no model runs): the
machine's identity, OpenVINO's explicit precision, the margin OpenVINO must win by, the twins'
fidelity bounds and verdicts, and which nodes a BF16 twin keeps in FP32."""

from __future__ import annotations

import numpy as np
import pytest

from depthstream import accelerator, engine_choice, engines, runtime
from depthstream.contract import MODELS
from export.twins import Candidate, Fidelity, fidelity, verdicts

NAME = "midas_dpt_beit_base_384"
GOOD, BAD = Fidelity(0.9999, 1e-2), Fidelity(0.964, 0.41)  # the BF16 whole-graph figure: broken

EPYC = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse avx avx2 fma
"""
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
XEON_PLAIN = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx avx2 avx512f
"""


def test_the_machine_is_named_with_the_flags_that_decide_the_fastest_runtime():
    assert accelerator.cpu_identity(EPYC) == "AMD EPYC [avx2]"
    amx, plain = accelerator.cpu_identity(XEON_AMX), accelerator.cpu_identity(XEON_PLAIN)
    assert amx == "Intel(R) Xeon(R) Processor [amx_bf16 amx_int8 avx512_bf16 avx512_vnni avx512f avx2]"
    assert plain != amx, "one model name, two machines: a Xeon with AMX is not one without"
    assert accelerator.has_bf16_engine(XEON_AMX) and not accelerator.has_bf16_engine(XEON_PLAIN)
    assert not accelerator.has_bf16_engine(EPYC)
    assert accelerator.cpu_identity("") == "unknown CPU [no AVX2]"


def test_openvino_is_asked_for_fp32_explicitly():
    """On AMX OpenVINO's CPU plugin defaults to BF16: an FP32 name must say f32."""
    properties = engines.compile_properties(2, engines.InferencePrecision.F32, None)
    assert properties == {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": "2",
        "NUM_STREAMS": "1",
        "PERFORMANCE_HINT": "LATENCY",
    }
    assert engines.compile_properties(1, "bf16", engines.default_cache_dir())["CACHE_DIR"]
    assert runtime.machine_description("OpenVINO CPU f32", 2).endswith(engines.OPENVINO_SETTINGS)


def test_a_gain_within_the_noise_changes_nothing():
    assert not engine_choice.openvino_wins(100.0, 95.0)  # 1.05x: the AVX2 EPYC's own figure
    assert engine_choice.openvino_wins(100.0, 90.0)


def candidate(
    name: str, fid: Fidelity | None = GOOD, ms: float | None = 50.0, unavailable: str = ""
) -> Candidate:
    return Candidate(MODELS[name], fidelity=fid, ms=ms, unavailable=unavailable)


def test_the_fastest_faithful_twin_is_kept_and_each_other_is_dropped_with_its_reason():
    int8, bf16 = f"{NAME}_int8", f"{NAME}_bf16"
    kept, why = verdicts(100.0, [candidate(int8, ms=70.0), candidate(bf16, ms=30.0)])
    assert kept.name == bf16 and why == {int8: f"the faster twin here is {bf16} (30 vs 70 ms)"}
    kept, why = verdicts(100.0, [candidate(int8, ms=70.0), candidate(bf16, BAD, ms=30.0)])
    assert kept.name == int8 and why[bf16].startswith("not faithful: correlation 0.9640, max 4.1e-01")
    kept, why = verdicts(60.0, [candidate(int8, ms=70.0), candidate(bf16, unavailable="no engine")])
    assert kept is None and why == {
        int8: "not faster here by 10% and its spread (70 vs 60 ms FP32; 0.86x [0.86-0.86, 1 rounds] FP32's speed)",
        bf16: "no engine",
    }
    # --int8 always: kept when faithful, even if slower; never when unfaithful
    assert verdicts(60.0, [candidate(int8, ms=70.0)], always=int8)[0].name == int8
    assert verdicts(60.0, [candidate(int8, BAD, ms=10.0)], always=int8)[0] is None


@pytest.mark.parametrize(
    "correlation, max_error, faithful",
    [(0.999, 0.05, True), (0.9989, 0.01, False), (0.9999, 0.051, False), (0.9998, 0.0335, True)],
)
def test_the_fidelity_bounds(correlation, max_error, faithful):
    assert Fidelity(correlation, max_error).faithful is faithful


def test_fidelity_is_the_worst_image_of_the_set():
    rng = np.random.default_rng(0)
    depths = [rng.normal(size=(20, 30)).astype(np.float32) for _ in range(3)]
    assert fidelity(depths, depths) == Fidelity(1.0, 0.0)
    broken = [depths[0], depths[1] + 0.5 * rng.normal(size=(20, 30)).astype(np.float32), depths[2]]
    measured = fidelity(broken, depths)
    assert measured.correlation < 0.95 and measured.max_error > 0.1 and not measured.faithful


def test_the_bf16_twin_keeps_what_the_export_fused_around_the_network_in_fp32():
    assert engines.stays_fp32("Mul_12") and engines.stays_fp32("Resize_3")  # pre/post, unscoped
    assert engines.stays_fp32("/network/backbone/embeddings/Concat")  # position-embedding resize
    assert not engines.stays_fp32("/network/backbone/embeddings/patch_embeddings/projection/Conv")
    assert not engines.stays_fp32("/network/backbone/encoder/layer.0/attention/MatMul")
    assert not engines.stays_fp32("/network/head/conv1/Conv")
