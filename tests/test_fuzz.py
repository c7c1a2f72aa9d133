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


def crashes() -> list[tuple[str, Path]]:
    return [(path.parent.name, path) for path in sorted((FUZZ / "crashes").glob("*/*"))]


@pytest.mark.parametrize(("target", "path"), crashes(), ids=lambda value: getattr(value, "name", value))
def test_every_input_that_crashed_a_target_is_handled_now(target, path):
    TARGETS[target].setup()
    TARGETS[target].run(path.read_bytes())  # raises what crashed it, if it is back


def test_the_engine_reports_a_crash_with_its_input(tmp_path, monkeypatch):
    """A target that raises what its callers do not expect is a crash: the run says so and keeps
    the input (the summary make fuzz prints)."""
    summary = fuzzing.fuzz("control", SECONDS, runs=None, planted=True)
    assert summary.crashed and summary.crash_input and Path(summary.crash_input).is_file()
