"""``make chaos``, two minutes of it: the cluster (HAProxy, two bridges, two Tritons) under six
cameras while a seeded schedule runs a fault every few seconds, as ``python -m bench.chaos``
runs it. Every frame must be accounted, every fault recovered from within its goal, the bridges'
metrics must agree with the clients, and no process it started may be left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos_cluster import still_running
from bench.chaos_faults import FAULTS
from tests.servers import ARTIFACTS

ROOT = Path(__file__).resolve().parent.parent
MINUTES_2 = 120


@pytest.mark.integration
def test_two_minutes_of_chaos_account_for_every_frame_and_recover(tiny_repository, tmp_path):
    output = tmp_path / "chaos.json"
    ARTIFACTS.mkdir(exist_ok=True)
    command = [
        sys.executable, "-m", "bench.chaos", "--duration-s", str(MINUTES_2), "--fault-min-s", "6",
        "--fault-max-s", "9", "--sample-s", "5", "--repository", str(tiny_repository),
        "--workdir", str(tmp_path / "work"), "--output", str(output),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (ARTIFACTS / "chaos.log").write_text(done.stdout + done.stderr)
    result = json.loads(output.read_text())
    assert not result["processes_left_running"]
    assert not still_running([life["pid"] for life in result["lives"]])
    assert result["unaccounted"] == 0, result["problems"]
    assert result["problems"] == [], result["problems"]
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("make chaos: passed")
    kinds = {fault["kind"] for fault in result["faults"]}
    assert len(kinds) >= len(FAULTS) // 2, kinds  # the schedule reached most kinds in two minutes
    books = result["accounts"]
    assert books["answered"] > 100 and books["sent"] == (
        books["answered"] + books["dropped"] + books["errors"] + books["lost"]
    )
    assert all(row["agree"] for row in result["metrics_agreement"])
    assert (output.with_suffix(".png")).stat().st_size > 10_000
    assert "unaccounted" in output.with_suffix(".md").read_text()


@pytest.mark.integration
def test_an_interrupted_chaos_run_stops_every_process_it_started(tiny_repository, tmp_path):
    """SIGTERM mid-run, while a fault may be holding a process frozen: nothing is left behind."""
    output = tmp_path / "chaos.json"
    command = [
        sys.executable, "-m", "bench.chaos", "--duration-s", "60", "--fault-min-s", "2", "--fault-max-s", "3",
        "--repository", str(tiny_repository), "--workdir", str(tmp_path / "work"), "--output", str(output),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # the first fault has struck
        if "SIGSTOP" in line or "SIGKILL" in line or "freeze" in line or "kill" in line:
            break
    os.kill(process.pid, signal.SIGTERM)
    process.communicate(timeout=120)
    result = json.loads(output.read_text())
    assert result["interrupted"]
    assert not result["processes_left_running"]
    assert not still_running([life["pid"] for life in result["lives"]])
    assert process.returncode == 1
