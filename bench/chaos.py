"""``make chaos``: the cluster under steady load and a seeded schedule of faults, for DURATION s.

HAProxy in front of two bridges, each spreading its streams over two embedded Tritons (the
cluster rehearsal's topology, bench/cluster.py), six camera-like clients (several models, sizes
and rates, two with ``steady`` on, one asking for 3D points, each keeping at most as many frames
unanswered as the page does), and every 60-75 s (``--fault-min-s``, ``--fault-max-s``) one
fault of a kind the schedule has not run as often as the others (bench/chaos_faults.py): SIGKILL
and SIGSTOP/SIGCONT of a Triton and of a bridge, a model unloaded and reloaded under traffic, a
reload while the repository is unwritable, a client that stops reading, a client that floods,
slow-loris handshakes and a burst of connections beyond the limit.
The last third of the run (``--quiet-s``) is load without faults: each process, warm
and at a steady load, is judged for growth there.

It checks, and writes to bench/results/chaos.json with a report (chaos.md, chaos.png):

- every frame accounted on every connection: answered + dropped + errors + lost = sent, where
  lost is allowed only on a connection that a fault closed (never more than the frames it may
  have unanswered), and a connection that ended normally agrees with the bridge's own accounts;
- each fault's recovery: from the victim being back until every camera is answered again;
- growth: each process's memory, descriptors and (bridges) tasks and waiting streams, sampled,
  their slope over the last two thirds of each process's life;
- the bridges' Prometheus counters against the clients' counts, per bridge life.

By default the models are tiny random-weight versions of the real architectures (built into
build/chaos, a minute): the soak is about the serving machinery, and frames must flow many times
a second on a 2-core machine for recovery to be timed in seconds. ``--repository`` serves real
exports instead. Every process it starts is stopped at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chaos_cluster import Cluster, still_running
from bench.chaos_faults import FAULTS, RECOVERY_GOAL_S, Chaos
from bench.chaos_report import judge, summary, write_report
from bench.cluster import Camera, Stream, stream
from bench.frames import jpegs
from bench.frames import stream as pictures
from bench.harness import ROOT, provenance
from bench.report import replace_between
from depthstream.settings import Settings, SettingsError, parse, setting

MODELS = ("depth_anything_v2_small", "depth_anything_v2_small_252", "midas_dpt_beit_base_384")
CURATED = ("depth_anything_v2_small", "midas_dpt_beit_base_384")  # what the tiny repository exports
WINDOW = 8  # frames a camera may have unanswered: the page's MAX_OUTSTANDING (web/capture.js)
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "chaos.json"
RECOVERY_WAIT_S = 60.0  # a fault not recovered from within this is recorded as not recovered


@dataclass(frozen=True)
class ChaosSettings(Settings):
    ENV_PREFIX = "CHAOS_"

    duration_s: float = setting(1800.0, env="DURATION", help="seconds of load and faults")
    seed: int = setting(1, help="the fault schedule's seed (same seed, same schedule)")
    fault_min_s: float = setting(60.0, help="least time from one fault's start to the next's")
    fault_max_s: float = setting(75.0, help="most time from one fault's start to the next's")
    quiet_s: float | None = setting(
        None, help="the run's last seconds, load without faults, where growth is judged; empty: a third"
    )
    sample_s: float = setting(5.0, help="seconds between samples of each process")
    repository: str = setting("", help="exported models; empty: tiny random-weight models in build/chaos")
    workdir: Path = setting(ROOT / "build" / "chaos", help="Tritons' work, logs, the tiny models")
    output: Path = setting(DEFAULT_OUTPUT, help="the results (and .md, .png; the docs' table when here)")

    @property
    def quiet_end_s(self) -> float:
        return self.duration_s / 3 if self.quiet_s is None else self.quiet_s

    def validate(self) -> None:
        self.require_all(
            [
                ("duration_s", self.duration_s >= 30, "at least 30"),
                ("fault_min_s", self.fault_min_s > 0, "positive"),
                ("fault_max_s", self.fault_max_s >= self.fault_min_s, "at least --fault-min-s"),
                ("sample_s", self.sample_s > 0, "positive"),
                ("quiet_s", 0 <= self.quiet_end_s < self.duration_s, "at least 0 and less than --duration-s"),
            ]
        )


def tiny_repository(workdir: Path) -> Path:
    """Tiny random-weight Depth Anything V2 and MiDaS, exported by the real export (its presets
    included, INT8 twins left out: they are judged by speed, which means nothing here)."""
    from depthstream.contract import EXPORTABLE
    from export.__main__ import main as export
    from export.architectures import random_weights_model

    repository = workdir / "model_repository"
    for name in CURATED:
        checkpoint = workdir / "checkpoints" / name
        if not (checkpoint / "config.json").exists():
            random_weights_model(EXPORTABLE[name], tiny=True).save_pretrained(checkpoint)
        args = ["--model", name, "--weights", str(checkpoint), "--output", str(repository)]
        if export([*args, "--int8", "never", "--brief"]) != 0:
            raise RuntimeError(f"the export of the tiny {name} failed")
    return repository


def cameras() -> list[Camera]:
    """Six cameras: several models, sizes and rates; two steady; one asking for 3D points."""
    small, medium, large = (jpegs(pictures(w, h, 1))[0] for w, h in ((160, 120), (320, 240), (640, 480)))
    da, da_252, midas = MODELS
    return [
        Camera(medium, 5.0, {"model": da}, WINDOW),
        Camera(large, 3.0, {"model": da, "steady": True}, WINDOW),
        Camera(small, 8.0, {"model": da_252}, WINDOW),
        Camera(medium, 4.0, {"model": midas}, WINDOW),
        Camera(large, 2.0, {"model": midas, "steady": True}, WINDOW),
        Camera(medium, 3.0, {"model": da, "output": "points"}, WINDOW),
    ]


def schedule(rng: random.Random):
    """Fault kinds forever, each round every kind once in a seeded order: every kind runs about
    as often as the others."""
    while True:
        kinds = list(FAULTS)
        rng.shuffle(kinds)
        yield from kinds


async def recovery_s(records: list[Stream], back: float) -> float | None:
    """Seconds from ``back`` (monotonic) until every camera has an answer after it."""
    deadline = back + RECOVERY_WAIT_S
    while time.monotonic() < deadline:
        firsts = [record.first_answer_after(back) for record in records]
        if all(t < float("inf") for t in firsts):
            return round(max(firsts) - back, 2)
        await asyncio.sleep(0.1)
    return None


async def soak(cluster: Cluster, settings: ChaosSettings) -> tuple[list[Stream], list, list[dict], float]:
    rng = random.Random(settings.seed)
    stop = asyncio.Event()
    setups = cameras()
    records = [Stream() for _ in setups]
    assert cluster.balancer is not None
    tasks = [
        asyncio.create_task(stream(cluster.balancer.ws_url, c, r, stop))
        for c, r in zip(setups, records, strict=True)
    ]
    sampler = asyncio.create_task(sample_every(cluster, settings.sample_s))
    chaos = Chaos(cluster, records, rng, setups[1].frame, request_timeout_s=3.0)
    end = time.monotonic() + settings.duration_s
    faults: list[dict] = []
    kinds = schedule(rng)
    next_at = time.monotonic() + rng.uniform(settings.fault_min_s, settings.fault_max_s) / 2
    try:
        while next_at < end - settings.quiet_end_s - 10:  # the last fault's recovery before the quiet end
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            kind = next(kinds)
            print(f"chaos: {cluster.now_s():6.0f} s  {kind}", flush=True)
            fault = await FAULTS[kind](chaos)
            fault["recovery_s"] = await recovery_s(records, cluster.began + fault["back_s"])
            fault["recovery_goal_s"] = RECOVERY_GOAL_S[kind]
            struck = cluster.began + fault["at_s"]
            fault["gap_s"] = round(max(record.gap_across_s(struck) for record in records), 2)
            faults.append(fault)
            print(
                f"chaos: {cluster.now_s():6.0f} s  {kind}: recovered in {fault['recovery_s']} s", flush=True
            )
            next_at = max(
                next_at + rng.uniform(settings.fault_min_s, settings.fault_max_s), time.monotonic() + 1
            )
        quiet_from_s = cluster.now_s()  # the faults are over: load alone until the end
        print(f"chaos: {quiet_from_s:6.0f} s  no more faults: load alone until the end", flush=True)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        sampler.cancel()
    return records, chaos.extra, faults, quiet_from_s


async def sample_every(cluster: Cluster, every_s: float) -> None:
    while True:
        await asyncio.to_thread(cluster.sample)
        await asyncio.sleep(every_s)


def stop_on_sigterm() -> None:
    """SIGTERM ends the run as Ctrl-C does: through ``finally``, which stops every process."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run(settings: ChaosSettings) -> dict:
    workdir = settings.workdir
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    repository = Path(settings.repository) if settings.repository else tiny_repository(workdir)
    cluster = Cluster(repository, workdir, logs, MODELS)
    where = provenance()  # the tree as it ran: files edited during a 30-minute run do not count
    interrupted = False
    try:
        cluster.start()
        print(f"chaos: cluster up (HAProxy on {cluster.balancer.port if cluster.balancer else '?'}); "
              f"{settings.duration_s:.0f} s of load and faults", flush=True)  # fmt: skip
        records, extra, faults, quiet_from_s = asyncio.run(soak(cluster, settings))
        final = [cluster.bridge_counts(i) for i in range(2)]  # the clients are done: the last word
    except KeyboardInterrupt:
        interrupted = True
        records, extra, faults, final, quiet_from_s = [], [], [], [], cluster.now_s()
    finally:
        cluster.stop()
    left = still_running(cluster.pids())
    result = judge(cluster, records, extra, faults, final, settings.duration_s, quiet_from_s)
    result.update(
        provenance=where,
        seed=settings.seed,
        interrupted=interrupted,
        processes_left_running=left,
        logs=str(logs),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        settings = parse(ChaosSettings, argv, parser=parser)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop_on_sigterm()
    result = run(settings)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(result, indent=2) + "\n")
    write_report(result, settings.output)
    if settings.output == DEFAULT_OUTPUT and not result["interrupted"]:  # the docs' figures
        replace_between(
            ROOT / "docs" / "testing.md", "<!-- chaos:begin -->", "<!-- chaos:end -->", summary(result)
        )
    problems = result["problems"]
    for problem in problems:
        print(f"chaos: PROBLEM: {problem}")
    verdict = "FAILED" if problems or result["interrupted"] else "passed"
    print(
        f"make chaos: {verdict}: {result['duration_s']:.0f} s, {len(result['faults'])} faults, "
        f"{result['unaccounted']} frames unaccounted; report {settings.output.with_suffix('.md')}"
    )
    return 0 if verdict == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
