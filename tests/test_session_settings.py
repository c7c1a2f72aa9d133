"""The served ONNX Runtime settings: the ones chosen for cold shapes, used by every served run,
and part of every speed record's key (a figure taken under other settings is never served)."""

from __future__ import annotations

import re
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
    """Shrinkage is a per-run option: a place that calls session.run itself would serve with
    another memory behaviour than the one measured. Only runtime.infer calls it (export's parity
    checks open sessions of their own, not served ones)."""
    offenders = []
    for folder in ("bench", "serving", "depthstream", "bridge", "client"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\bsession\.run\(", line) and path.name != "runtime.py":
                    offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []
    runtime_source = (ROOT / "depthstream" / "runtime.py").read_text()
    assert runtime_source.count("session.run(") == 1 and "run_options())" in runtime_source
