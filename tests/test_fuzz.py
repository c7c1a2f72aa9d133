"""The fuzz targets (tests/fuzz): a few seconds of each under the engine, and every input that
once crashed one, replayed (the full runs: ``make fuzz``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import __main__ as fuzzing
from tests.fuzz.targets import TARGETS

FUZZ = Path(__file__).parent / "fuzz"
SECONDS = 3


@pytest.mark.parametrize("target", fuzzing.TARGET_NAMES)
def test_each_target_runs_under_the_engine_from_its_seeds_without_a_crash(target):
    assert sorted(TARGETS) == sorted(fuzzing.TARGET_NAMES)
    assert any((FUZZ / "corpus" / target).iterdir()), "a seed corpus from the tests' own inputs"
    summary = fuzzing.fuzz(target, SECONDS)
    assert not summary.crashed, summary.line()
    assert summary.runs > 0 and summary.coverage > 0, summary.line()  # the engine ran, guided


def crashes() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted((FUZZ / "crashes").glob("*/*")):
        found.setdefault(path.parent.name, []).append(path)
    return found


@pytest.mark.parametrize("target", sorted(crashes()))
def test_every_input_that_crashed_a_target_is_handled_now_within_the_ceilings(target, tmp_path):
    """Replayed under the engine with its time and memory ceilings: the PNG found by fuzzing
    (3.8 GB, 10 s in OpenCV) breaks both if its guard goes."""
    summary = fuzzing.fuzz(target, SECONDS, crashes=tmp_path, inputs=crashes()[target])
    assert not summary.crashed, summary.line()
    assert summary.runs >= len(crashes()[target])


def test_the_engine_reports_a_crash_with_its_input(tmp_path):
    """A target that raises what its callers do not expect is a crash: the run says so and keeps
    the input (the summary make fuzz prints)."""
    summary = fuzzing.fuzz("control", SECONDS, planted=True, crashes=tmp_path)
    assert summary.crashed and Path(summary.crash_input).parent == tmp_path
    assert b"config" in Path(summary.crash_input).read_bytes()
