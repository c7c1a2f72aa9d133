"""The served ONNX Runtime settings: the ones chosen for cold shapes, used by every served run,
and part of every speed record's key (a figure taken under other settings is never served)."""

from __future__ import annotations

import ast
from pathlib import Path

from depthstream import runtime

ROOT = Path(__file__).resolve().parent.parent


def test_the_session_settings_are_the_ones_chosen():
    options = runtime.session_options(2)
    # a new input shape costs what a known one does: the arena on, no per-shape memory plan
    assert options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    # and the arena gives its memory back after every run: the peak is the request in hand's
    assert runtime.run_options().get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_every_served_run_passes_the_run_options():
    """Shrinkage is a per-run option: a place that runs an ONNX Runtime session itself would
    serve with another memory behaviour than the one measured. Only runtime.infer runs one
    (export's parity checks open sessions of their own, not served ones): any ``X.run(names,
    {...})`` call (an ONNX Runtime session's signature: the outputs, then the feeds as a dict)
    elsewhere is a bypass."""
    offenders = []
    for folder in ("bench", "serving", "depthstream", "bridge", "client", "demo"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "run"
                    and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Dict)
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == ["depthstream/runtime.py:" + str(_infer_line())]


def _infer_line() -> int:
    source = (ROOT / "depthstream" / "runtime.py").read_text()
    for number, line in enumerate(source.splitlines(), 1):
        if "session.run(names, {INPUT_NAME: batch}, run_options())" in line:
            return number
    raise AssertionError("runtime.infer no longer passes run_options()")
