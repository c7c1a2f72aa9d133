"""What ``make chaos`` concludes: the books of every connection, each fault's recovery, each
process life's growth, the bridges' counters against the clients'; then chaos.md and chaos.png."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from bench.chaos_cluster import Cluster, Life
from bench.cluster import Connection, Stream

# a fault of these kinds may close a connection with frames unanswered ("lost"), up to this
# long after it ended (a killed bridge's clients hear of it within a second; 15 s is ample)
CLOSING_FAULTS = ("SIGKILL bridge", "SIGSTOP/SIGCONT bridge", "client stops reading")
CLOSE_GRACE_S = 15.0
JUDGE_MIN_S = 300.0  # a quiet end shorter than this is too short for a slope to mean anything
GROWTH_BOUNDS = {"rss_mb": 1.0, "fds": 2.0, "tasks": 2.0, "waiting": 1.0}  # per 10 minutes
SETTLE_S = 30.0  # after a fault is over, before the load counts as steady again
BIN_S = 10.0


def theil_sen(points: list[tuple[float, float]]) -> float | None:
    """The median of the pairwise slopes: a burst in the middle does not tilt it."""
    slopes = [
        (y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1 :] if x2 > x1
    ]
    return statistics.median(slopes) if slopes else None


def growth(life: Life, key: str) -> float | None:
    """The slope of ``key`` over the last two thirds of the life, per 10 minutes: what the
    faults' moves of load between processes tilt (a killed bridge's streams land on the other)."""
    if not life.samples or life.ended_s is None:
        return None
    after = life.started_s + (life.ended_s - life.started_s) / 3
    points = [(s["at_s"], s[key]) for s in life.samples if key in s and s["at_s"] >= after]
    slope = theil_sen(points)
    return None if slope is None else round(slope * 600, 3)


def quiet_growth(life: Life, quiet_from_s: float, key: str) -> tuple[float | None, float]:
    """(the slope of ``key`` per 10 minutes, seconds it spans) over the run's quiet end: warm
    processes, every fault over, the load standing still: the signature of a leak."""
    start = quiet_from_s + SETTLE_S
    points = [(s["at_s"], s[key]) for s in life.samples if key in s and s["at_s"] >= start]
    slope = theil_sen(points)
    span = points[-1][0] - points[0][0] if len(points) > 1 else 0.0
    return (None if slope is None else round(slope * 600, 3)), span


def steps(life: Life, faults: list[dict], key: str) -> list[dict]:
    """What each fault left behind: ``key`` settled after it against just before it."""
    found = []
    for fault in faults:
        before = [
            s[key] for s in life.samples if key in s and fault["at_s"] - 30 <= s["at_s"] < fault["at_s"]
        ]
        after = [
            s[key]
            for s in life.samples
            if key in s and fault["back_s"] + SETTLE_S <= s["at_s"] < fault["back_s"] + SETTLE_S + 30
        ]
        if before and after:
            change = statistics.median(after) - statistics.median(before)
            if abs(change) >= 1:
                found.append(
                    {"fault": f"{fault['kind']} at {fault['at_s']:.0f} s", "change": round(change, 1)}
                )
    return found


def life_report(life: Life, faults: list[dict], quiet_from_s: float) -> dict:
    report = life.summary()
    lasted = (life.ended_s or life.started_s) - life.started_s
    quiet = {key: quiet_growth(life, quiet_from_s, key) for key in GROWTH_BOUNDS}
    report["lasted_s"] = round(lasted, 1)
    report["quiet_s"] = round(quiet["rss_mb"][1], 1)
    # the whole quiet end in one life: a process restarted in it has not stood still
    report["judged"] = life.started_s <= quiet_from_s and report["quiet_s"] >= JUDGE_MIN_S
    report["per_10_min"] = {key: slope for key, (slope, _) in quiet.items()}
    report["per_10_min_whole_life"] = {key: growth(life, key) for key in GROWTH_BOUNDS}
    report["steps_at_faults"] = {key: steps(life, faults, key) for key in ("rss_mb", "fds", "tasks")}
    report["rss_mb"] = {
        "first": life.samples[0]["rss_mb"] if life.samples else None,
        "last": life.samples[-1]["rss_mb"] if life.samples else None,
        "max": max((s["rss_mb"] for s in life.samples), default=None),
    }
    report["fds_max"] = max((s["fds"] for s in life.samples), default=None)
    report["samples_series"] = life.samples
    return report


def closing_fault(connection: Connection, faults: list[dict], began: float) -> dict | None:
    closed = (connection.closed_at or began) - began
    for fault in faults:
        if fault["kind"] in CLOSING_FAULTS and fault["at_s"] <= closed <= fault["back_s"] + CLOSE_GRACE_S:
            return fault
    return None


def account(connections: list[Connection], faults: list[dict], began: float) -> tuple[dict, list[str]]:
    """answered + dropped + errors + lost = sent on every connection; lost only where a fault
    closed it; a connection that ended normally agrees with the bridge's own accounts."""
    totals = {"connections": 0, "sent": 0, "answered": 0, "dropped": 0, "errors": 0, "lost": 0}
    unaccounted, problems = 0, []
    for c in connections:
        if c.sent == 0:
            continue
        unsettled = c.sent - c.settled
        totals["connections"] += 1
        for key, value in (("sent", c.sent), ("answered", len(c.answered)), ("dropped", len(c.dropped))):
            totals[key] += value
        totals["errors"] += len(c.errors)
        if c.accounts is not None:  # ended by the client: nothing may be missing
            missing = (
                unsettled + abs(c.accounts["received"] - c.sent) + abs(c.accounts["dropped"] - len(c.dropped))
            )
            if missing:
                problems.append(
                    f"a connection to {c.bridge} ended normally with {unsettled} frames unsettled; the "
                    f"bridge received {c.accounts['received']} of {c.sent}, dropped {c.accounts['dropped']} "
                    f"(the client saw {len(c.dropped)})"
                )
            unaccounted += missing
        elif unsettled:
            if closing_fault(c, faults, began) is None:
                problems.append(
                    f"{unsettled} frames lost on a connection to {c.bridge} closed ({c.close_code}) at "
                    f"{(c.closed_at or began) - began:.0f} s, when no fault closes connections"
                )
                unaccounted += unsettled
            else:
                totals["lost"] += unsettled
    totals["unaccounted"] = unaccounted
    return totals, problems


def agreement(
    cluster: Cluster, connections: list[Connection], final: list[dict | None]
) -> tuple[list[dict], list[str]]:
    """Each bridge's last life, ended after the clients: its counters against the clients' own
    counts on the connections it served (exact where nothing was lost; within the lost frames
    where a connection was cut)."""
    rows, problems = [], []
    for i, counts in enumerate(final):
        name = cluster.bridge_name(i)
        life = next(life for life in reversed(cluster.lives) if life.name == name)
        served = [
            c for c in connections if c.bridge == name and c.opened_at - cluster.began >= life.started_s
        ]
        sent = sum(c.sent for c in served)
        lost = sum(c.sent - c.settled for c in served if c.accounts is None)
        answered = sum(len(c.answered) for c in served)
        dropped = sum(len(c.dropped) for c in served)
        row = {"bridge": name, "life_started_s": life.started_s, "clients_sent": sent, "clients_lost": lost}
        if counts is None:
            problems.append(f"{name} did not answer its /metrics at the end")
            rows.append(row)
            continue
        row.update(
            bridge_received=int(counts["received"]),
            clients_answered=answered,
            bridge_answered=int(counts["answered"]),
            clients_dropped=dropped,
            bridge_dropped=int(counts["dropped"]),
        )
        row["agree"] = (
            sent - lost <= counts["received"] <= sent
            and answered <= counts["answered"] <= answered + lost
            and dropped <= counts["dropped"] <= dropped + lost
        )
        if not row["agree"]:
            problems.append(f"{name}'s metrics disagree with its clients: {row}")
        rows.append(row)
    return rows, problems


def fault_problems(fault: dict) -> list[str]:
    """What a fault's own record says went wrong (beyond its recovery)."""
    kind, checks = fault["kind"], []
    if fault.get("recovery_s") is None:
        checks.append("no recovery within 60 s")
    elif fault["recovery_s"] > fault["recovery_goal_s"]:
        checks.append(f"recovery {fault['recovery_s']} s over its goal of {fault['recovery_goal_s']} s")
    if "silence_goal_s" in fault and fault["longest_silence_s"] > fault["silence_goal_s"]:
        checks.append(f"a camera heard nothing for {fault['longest_silence_s']} s while Triton was frozen")
    if "out_of_rotation_goal_s" in fault and (
        fault["out_of_rotation_s"] is None or fault["out_of_rotation_s"] > fault["out_of_rotation_goal_s"]
    ):
        checks.append(f"out of HAProxy's rotation after {fault['out_of_rotation_s']} s")
    if fault.get("unload_error") or fault.get("load_error"):
        checks.append(f"unload: {fault.get('unload_error') or 'ok'}, load: {fault.get('load_error') or 'ok'}")
    if kind == "client stops reading" and fault["slow_clients_counted"] < 1:
        checks.append("the client that read nothing was not cut off (depthstream_slow_clients did not rise)")
    if "open_goal_s" in fault and fault["longest_open_s"] > fault["open_goal_s"]:
        checks.append(f"a slow-loris connection stayed open {fault['longest_open_s']} s")
    if kind == "connection burst" and "attempts" in fault:
        if fault["accepted"] + fault["refused"] != fault["attempts"] or fault["refused"] < 1:
            checks.append(
                f"burst: {fault['accepted']} served + {fault['refused']} refused of {fault['attempts']}"
            )
        if fault["refusals_counted"] < fault["refused"]:
            checks.append(f"burst: {fault['refused']} refused, {fault['refusals_counted']} counted")
    return [f"{kind} of {fault['target']} at {fault['at_s']:.0f} s: {check}" for check in checks]


def by_kind(faults: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for fault in faults:
        groups[fault["kind"]].append(fault)
    rows = []
    for kind, group in groups.items():
        times = [f["recovery_s"] for f in group if f["recovery_s"] is not None]
        rows.append(
            {
                "kind": kind,
                "count": len(group),
                "recovery_median_s": round(statistics.median(times), 2) if times else None,
                "recovery_max_s": max(times) if len(times) == len(group) else None,
                "goal_s": group[0]["recovery_goal_s"],
                # the longest a camera went without an answer across the fault's start
                "gap_max_s": max(f["gap_s"] for f in group),
                "failed": sum(1 for f in group if fault_problems(f)),
            }
        )
    return rows


def series(records: list[Stream], began: float, duration_s: float) -> dict:
    """Answers per second and latency quantiles per BIN_S, over every camera."""
    bins = int(duration_s // BIN_S) + 1
    answers = [0] * bins
    latencies: list[list[float]] = [[] for _ in range(bins)]
    for record in records:
        for at, latency in zip(record.answers_at, record.latencies_s, strict=False):
            b = int((at - began) // BIN_S)
            if 0 <= b < bins:
                answers[b] += 1
                latencies[b].append(latency * 1e3)

    def quantile(values: list[float], q: int) -> float | None:
        return round(statistics.quantiles(values, n=100)[q - 1], 1) if len(values) >= 2 else None

    return {
        "bin_s": BIN_S,
        "answers_per_s": [round(n / BIN_S, 2) for n in answers],
        "latency_p50_ms": [quantile(v, 50) for v in latencies],
        "latency_p95_ms": [quantile(v, 95) for v in latencies],
    }


def judge(cluster: Cluster, records, extra, faults, final, duration_s: float, quiet_from_s: float) -> dict:
    connections = [c for record in records for c in record.connections] + list(extra)
    books, problems = account(connections, faults, cluster.began)
    rows, disagreements = agreement(cluster, connections, final) if final else ([], [])
    problems += disagreements
    for fault in faults:
        problems += fault_problems(fault)
    lives = [life_report(life, faults, quiet_from_s) for life in cluster.lives]
    for life in lives:
        for key, bound in GROWTH_BOUNDS.items():
            slope = life["per_10_min"][key]
            if life["judged"] and slope is not None and slope > bound:
                problems.append(
                    f"{life['name']} (pid {life['pid']}): {key} grew {slope} per 10 minutes (bound {bound})"
                )
    return {
        "duration_s": duration_s,
        "quiet_from_s": round(quiet_from_s, 1),
        "unaccounted": books["unaccounted"],
        "accounts": books,
        "faults": faults,
        "faults_by_kind": by_kind(faults),
        "lives": lives,
        "metrics_agreement": rows,
        "series": series(records, cluster.began, duration_s),
        "problems": problems,
    }


# --- the report ----------------------------------------------------------------------------------
def write_report(result: dict, output: Path) -> None:
    output.with_suffix(".md").write_text(markdown(result))
    plot(result, output.with_suffix(".png"))


def markdown(result: dict) -> str:
    return f"# make chaos\n\n{summary(result)}"


def summary(result: dict) -> str:
    """The run's figures: the frames' books, recovery by fault kind, each life's growth."""
    books = result["accounts"]
    lines = [
        f"Measured by `make chaos` on {result['provenance']}; {result['duration_s']:.0f} s, seed "
        f"{result['seed']}, {len(result['faults'])} faults; plots: `bench/results/chaos.png`.",
        "",
        f"**Frames**: {books['sent']} sent on {books['connections']} connections: {books['answered']} answered, "
        f"{books['dropped']} dropped, {books['errors']} errors, {books['lost']} lost on connections a fault "
        f"closed; **{result['unaccounted']} unaccounted**.",
        "",
        "Recovery: from the victim being back (restarted and ready, resumed, reloaded, the hostile "
        "client gone) until every camera is answered again. Longest gap: the longest any camera went "
        "without an answer across a fault's start.",
        "",
        "| fault | count | recovery median | recovery max | goal | longest gap | failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["faults_by_kind"]:
        lines.append(
            f"| {row['kind']} | {row['count']} | {row['recovery_median_s']} s | {row['recovery_max_s']} s "
            f"| <= {row['goal_s']:g} s | {row['gap_max_s']} s | {row['failed']} |"
        )
    lines += [
        "",
        f"Growth, per 10 minutes: each process's slope over the run's quiet end (load without "
        f"faults, from {result['quiet_from_s']:.0f} s + {SETTLE_S:.0f} s; judged for a process that "
        f"lived through it, {JUDGE_MIN_S / 60:.0f} minutes or more); in brackets the whole life's "
        "(its last two thirds), which the faults' moves of load tilt: a killed bridge's streams land "
        "on the other, a Triton that takes over a killed one's streams warms up for new shapes; "
        "and the steps the faults left (MB).",
        "",
        "| process life | lasted (quiet) | RSS first → last | MB / 10 min quiet (whole) | fds / 10 min | "
        "tasks / 10 min | steps at faults (MB) | judged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for life in result["lives"]:
        rss, steady, whole = (
            life["rss_mb"],
            life["per_10_min"],
            life["per_10_min_whole_life"],
        )  # steady: the quiet end
        jumps = ", ".join(f"{step['change']:+g}" for step in life["steps_at_faults"]["rss_mb"]) or "-"
        lines.append(
            f"| {life['name']} (pid {life['pid']}, {life['ended_by'] or 'running'}) | {life['lasted_s']:.0f} s "
            f"({life['quiet_s']:.0f} s) | {rss['first']} → {rss['last']} MB | {shown(steady['rss_mb'])} "
            f"({shown(whole['rss_mb'])}) | {shown(steady['fds'])} | {shown(steady['tasks'])} "
            f"| {jumps} | {'yes' if life['judged'] else 'too short'} |"
        )
    lines += ["", "Problems:" if result["problems"] else "Problems: none."]
    lines += [f"- {problem}" for problem in result["problems"]]
    return "\n".join(lines) + "\n"


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["series"]
    times = [i * s["bin_s"] for i in range(len(s["answers_per_s"]))]
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    top.plot(times, s["answers_per_s"], color="tab:blue")
    top.set_ylabel("answers / s (all cameras)")
    middle.plot(times, s["latency_p50_ms"], label="p50")
    middle.plot(times, s["latency_p95_ms"], label="p95")
    middle.set_ylabel("latency (ms)")
    middle.legend(loc="upper right")
    for life in result["lives"]:
        points = life["samples_series"]
        bottom.plot(
            [p["at_s"] for p in points], [p["rss_mb"] for p in points], label=f"{life['name']} {life['pid']}"
        )
    bottom.set_ylabel("RSS (MB, with children)")
    bottom.set_xlabel("seconds")
    bottom.legend(fontsize=6, ncol=4, loc="upper left")
    for axis in (top, middle, bottom):
        for fault in result["faults"]:
            axis.axvline(fault["at_s"], color="grey", alpha=0.3, linewidth=0.8)
    top.set_title(f"make chaos: {result['provenance']}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
