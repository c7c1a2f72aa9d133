"""``make fuzz``: each target under the fuzzing engine for ``--seconds`` (FUZZ_SECONDS), one after
the other, each from its seed corpus (tests/fuzz/corpus/TARGET) and what earlier runs found
(build/fuzz/corpus/TARGET); one summary line a target (runs, runs a second, coverage, crashes),
bench/results/fuzz.json. A crash's input is kept in build/fuzz/crashes/TARGET/: add it to
tests/fuzz/crashes/TARGET/ with its fix, and tests/test_fuzz.py replays it from then on."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUILD = ROOT / "build" / "fuzz"
TARGET_NAMES = ("control", "image", "websocket", "settings", "catalog", "backend")


@dataclass
class Summary:
    target: str
    seconds: float
    runs: int
    runs_per_s: int
    coverage: int  # edges libFuzzer saw covered ("cov")
    features: int  # its finer coverage features ("ft")
    corpus: int  # inputs kept
    crashed: bool
    crash_input: str  # where the input that crashed was kept ("" for none)

    def line(self) -> str:
        outcome = f"CRASH, input kept in {self.crash_input}" if self.crashed else "no crash"
        return (
            f"fuzz {self.target}: {self.seconds:.0f} s, {self.runs:,} runs ({self.runs_per_s:,}/s), "
            f"coverage {self.coverage} edges / {self.features} features, corpus {self.corpus}: {outcome}"
        )


def _last(pattern: str, text: str, default: int = 0) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else default


PLANT = "DEPTHSTREAM_FUZZ_PLANTED_BUG"  # tests only: the target raises on a seed's bytes


TIMEOUT_S = 10  # one input that takes longer is a finding too (libFuzzer's -timeout)
RSS_LIMIT_MB = 2048  # as is one that takes more memory (the bridge's whole budget: deploy/)


def inherited_rss_mb() -> int:
    """The peak RSS a child starts with: Linux carries a process's peak across fork and exec, and
    libFuzzer's limit reads that peak, so a child of a large process (pytest, late in the suite)
    would be out of memory before its first input. The limit is set above it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def fuzz(
    target: str,
    seconds: float,
    runs: int | None = None,
    planted: bool = False,
    crashes: Path | None = None,
    inputs: list[Path] | None = None,
) -> Summary:
    """``target`` under the engine for ``seconds`` from its corpora; with ``inputs``, those
    files once each instead (a replay), under the same time and memory ceilings."""
    corpus, crashes = BUILD / "corpus" / target, crashes or BUILD / "crashes" / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    sources = [str(path) for path in inputs] if inputs else [str(corpus), str(HERE / "corpus" / target)]
    flags = [
        f"-max_total_time={int(seconds)}",
        "-print_final_stats=1",
        f"-timeout={TIMEOUT_S}",
        f"-rss_limit_mb={inherited_rss_mb() + RSS_LIMIT_MB}",
        f"-artifact_prefix={crashes}/",
        *([f"-runs={runs}"] if runs is not None else []),
        *sources,
    ]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.engine", target, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, PLANT: target} if planted else None,
    )
    said = done.stderr
    crashed = done.returncode != 0
    kept = re.findall(r"Test unit written to (\S+)", said)
    if crashed:
        sys.stderr.write(said[-6000:])
    return Summary(
        target=target,
        seconds=round(time.monotonic() - started, 1),
        runs=_last(r"stat::number_of_executed_units:\s*(\d+)", said),
        runs_per_s=_last(r"stat::average_exec_per_sec:\s*(\d+)", said),
        coverage=_last(r"cov: (\d+)", said),
        features=_last(r"ft: (\d+)", said),
        corpus=_last(r"corp: (\d+)", said),
        crashed=crashed,
        crash_input=kept[-1] if kept else "",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("targets", nargs="*", help=f"of {', '.join(TARGET_NAMES)} (default: all)")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--output", type=Path, default=None, help="the summary's JSON (default: none)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGET_NAMES))
    if unknown:
        parser.error(f"no target {', '.join(unknown)}; the targets: {', '.join(TARGET_NAMES)}")
    summaries = []
    for target in args.targets or TARGET_NAMES:
        summary = fuzz(target, args.seconds)
        print(summary.line(), flush=True)
        summaries.append(summary)
    if args.output is not None:
        args.output.write_text(json.dumps([asdict(s) for s in summaries], indent=2) + "\n")
    crashed = [s.target for s in summaries if s.crashed]
    print(f"fuzz: {len(summaries)} targets, " + (f"CRASHED: {', '.join(crashed)}" if crashed else "no crash"))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
