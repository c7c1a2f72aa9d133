"""Timings a busy minute cannot fool: candidates timed interleaved, the lower quartile kept. A
synthetic burst of other load (each run 3x slower while it lasts, at any moment of the
measurement) changes neither the INT8 verdict nor the default model. The clock and the runs are
simulated (deterministic): the test measures the method, not this machine."""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import numpy as np
import pytest

from bridge.catalog import ModelInfo
from bridge.default_model import choose_default
from depthstream import rounds, runtime

BURST_FACTOR = 3.0


class BusyMachine:
    """A fake clock and fake runs: each session costs its own time, 3x while the burst lasts (a
    window of the whole measurement's runs, by index)."""

    def __init__(self, burst_start: int, burst_runs: int) -> None:
        self.now = 0.0
        self.runs = 0
        self.burst = range(burst_start, burst_start + burst_runs)

    def perf_counter(self) -> float:
        return self.now

    def infer(self, session, batch) -> None:
        self.now += session.cost_s * (BURST_FACTOR if self.runs in self.burst else 1.0)
        self.runs += 1


def timed(monkeypatch, machine: BusyMachine, costs_ms: list[float]) -> list[float]:
    monkeypatch.setattr(runtime, "infer", machine.infer)
    monkeypatch.setattr(rounds, "time", SimpleNamespace(perf_counter=machine.perf_counter))
    sessions = [SimpleNamespace(cost_s=ms / 1e3) for ms in costs_ms]
    times = runtime.interleaved_ms(sessions, np.zeros((2, 2, 3), np.uint8))
    return [runtime.robust_ms(runs) for runs in times]


def block_medians(costs_ms: list[float], machine: BusyMachine) -> list[float]:
    """The way it was timed before: one model's block of runs after the other's, the median."""
    out = []
    for cost in costs_ms:
        runs = []
        for _ in range(1 + runtime.SPEED_ROUNDS):
            runs.append(cost * (BURST_FACTOR if machine.runs in machine.burst else 1.0))
            machine.runs += 1
        out.append(statistics.median(runs[1:]))
    return out


TOTAL_RUNS = 2 * (1 + runtime.SPEED_ROUNDS)
BURSTS = [(start, TOTAL_RUNS * 2 // 5) for start in range(0, TOTAL_RUNS, 3)]  # 40% of the runs


@pytest.mark.parametrize("start,length", BURSTS)
def test_a_burst_does_not_change_the_int8_verdict(monkeypatch, start, length):
    fp32_ms, int8_ms = 100.0, 70.0  # INT8 is 30% faster
    fp32, int8 = timed(monkeypatch, BusyMachine(start, length), [fp32_ms, int8_ms])
    assert int8 < fp32, "the INT8 twin is kept"
    assert fp32 == pytest.approx(fp32_ms, rel=0.01) and int8 == pytest.approx(int8_ms, rel=0.01)


def test_the_same_burst_fooled_the_old_block_timing():
    """The burst has teeth: timed in blocks with the median, some positions flip the verdict."""
    flipped = [
        (start, length)
        for start, length in BURSTS
        if (lambda f, i: i >= f)(*block_medians([100.0, 70.0], BusyMachine(start, length)))
    ]
    assert flipped


@pytest.mark.parametrize("start,length", BURSTS)
def test_a_burst_does_not_change_the_default_model(monkeypatch, start, length):
    """Three presets whose true speeds put the live line just past the 364 preset (~5.7 frames/s
    end to end; 3x slower it would not be live): the page's default, from speeds timed through
    a burst, is the one from the true speeds."""
    true_ms = {
        "depth_anything_v2_small": 560.0,
        "depth_anything_v2_small_364": 130.0,
        "depth_anything_v2_small_252": 85.0,
    }
    names = list(true_ms)
    measured = []
    own_runs = 1 + runtime.SPEED_ROUNDS
    for name in names:  # each model timed on its own (its export row), a burst over 40% of it
        burst = BusyMachine(start % own_runs, own_runs * 2 // 5)
        measured += timed(monkeypatch, burst, [true_ms[name]])

    def infos(speeds):
        return [ModelInfo(n, ready=True, ms_per_frame=ms) for n, ms in zip(names, speeds, strict=True)]

    assert choose_default(infos(measured)).model == choose_default(infos(true_ms.values())).model


def test_one_model_timed_twice_must_agree():
    assert runtime.agree(560, 600) and not runtime.agree(560, 1658)


# --- depthstream.rounds: the helper every published or deciding ratio is measured with ---------
@pytest.mark.parametrize("order", [("slow", "fast"), ("fast", "slow")])
def test_alternating_rounds_find_the_slow_contender_whichever_goes_first(monkeypatch, order):
    """Two contenders, one 1.5x the other, on a machine that triples every run for a stretch
    covering 40% of the rounds: the median per-round ratio is 1.5 in either order, where a block
    timing would say what the burst says."""
    machine = BusyMachine(burst_start=6, burst_runs=10)
    monkeypatch.setattr(rounds, "time", SimpleNamespace(perf_counter=machine.perf_counter))
    costs = {"slow": 0.15, "fast": 0.1}
    runs = [lambda cost=costs[name]: machine.infer(SimpleNamespace(cost_s=cost), None) for name in order]
    times = dict(zip(order, rounds.alternate(runs, rounds=12), strict=True))
    assert [len(t) for t in times.values()] == [12, 12] and machine.runs == 2 + 24  # a warm-up each
    measured = rounds.ratio(times["slow"], times["fast"])
    assert measured.median == pytest.approx(1.5) and measured.rounds == 12
    assert measured.low <= measured.median <= measured.high


def test_a_ratio_needs_the_same_rounds():
    with pytest.raises(ValueError, match="same rounds"):
        rounds.ratio([1.0, 2.0], [1.0])
    assert rounds.ratio([2.0, 4.0, 3.0], [1.0, 2.0, 1.0]).as_dict() == {
        "median": 2.0,
        "iqr": [2.0, 2.5],
        "rounds": 3,
    }
