"""Write the results: JSON, a PNG plot, and the tables in docs/ (between markers)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from bench.measure import Result

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _no_nan(value):
    """Strict JSON: a figure that was not measured (NaN) is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _cell(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def write_json(path: Path, machine: str, results: list[Result], goals: list[dict]) -> None:
    path.write_text(
        json.dumps(
            _no_nan({"machine": machine, "results": [r.as_dict() for r in results], "goals": goals}), indent=2
        )
        + "\n"
    )


def plot(path: Path, machine: str, results: list[Result]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.size == "640x480" and r.concurrency == 1]
    labels = [f"{r.model}\n{r.approach}" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [r.fps for r in rows], color="#f29f05")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("frames per second (640x480, one stream)")
    ax.set_title(f"depthstream: {machine}", fontsize=9)
    for i, r in enumerate(rows):
        ax.text(r.fps, i, f" {r.fps:.1f} fps, p95 {r.p95_ms:.0f} ms", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(machine: str, results: list[Result], goals: list[dict]) -> str:
    lines = [
        f"Measured by `make bench` on {machine}; ratios matter more than absolute figures.",
        "",
        "| model | approach | frame | streams | frames/s | p50 ms | p95 ms | p99 ms | CPU ms/frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.approach} | {r.size} | {r.concurrency} | {r.fps:.2f} | {r.p50_ms:.0f} "
            f"| {r.p95_ms:.0f} | {r.p99_ms:.0f} | {_cell(r.cpu_ms_per_frame)} |"
        )
    lines += ["", "| goal | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'no'} |" for g in goals]
    return "\n".join(lines)


def update_readme(readme: Path, table: str) -> None:
    replace_between(readme, BEGIN, END, table)


def publish(path: Path, report: dict, table: str, readme: Path | None, markers: tuple[str, str]) -> None:
    """A side measurement's results: its JSON, its table in its docs page (between its markers,
    unless ``readme`` is None) and on stdout."""
    path.write_text(json.dumps(report, indent=2) + "\n")
    if readme is not None:
        replace_between(readme, *markers, table)
    print(table)


def unpublishable() -> str | None:
    """Why figures measured now may not go into the docs (None: they may). The docs name the
    commit a figure was measured on, so that anyone can check it out and measure again: a
    working tree with uncommitted changes is no such commit."""
    from bench.harness import commit

    where = commit()
    if "uncommitted" in where or "unknown" in where:
        return f"measured on {where}: commit, then measure again"
    return None


def replace_between(readme: Path, begin: str, end: str, table: str) -> None:
    """Replace what lies between two marker comments of a Markdown file, if the figures may be
    published (else say why, and leave it as it is: the results' JSON keeps them)."""
    reason = unpublishable()
    if reason is not None:
        print(f"not written to {readme.name}: {reason}")
        return
    text = readme.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    replacement = f"{begin}\n{table}\n{end}"
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {begin} ... {end} markers")
    readme.write_text(pattern.sub(lambda _: replacement, text))
