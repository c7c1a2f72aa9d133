"""The README's headline figures, from the tables ``make bench`` just wrote (its JSON in
bench/results/): the full stack against the original app's way (the single-process app that ran
PyTorch per frame in its web server), from alternating rounds; the stack's own time a frame; and
flicker with steady depth. Each names the run's machine, date and commit."""

from __future__ import annotations

import json
from pathlib import Path

from bench.approaches import FULL_STACK, ORIGINAL
from bench.report import replace_between
from bench.versus import RESULTS

BEGIN, END = "<!-- headline:begin -->", "<!-- headline:end -->"


def against_the_original(row: dict) -> str | None:
    """One line: a served name through the whole stack against the original app's way, from the
    rounds that alternated the two on the same frames (bench.versus)."""
    paired = row["extra"].get("vs_reference")
    if row["approach"] != FULL_STACK or not paired or paired.get("of") != ORIGINAL:
        return None
    low, high = paired["iqr"]
    return (
        f"- `{row['model']}` at {row['size']} through the whole stack (WebSocket, bridge, Triton): "
        f"**{paired['median']:.2f}x the original app's way** (PyTorch per frame in its web server; "
        f"the median of {paired['rounds']} alternating rounds on the same frames, interquartile range "
        f"{low:.2f}-{high:.2f}), {row['p50_ms']:.0f} ms a frame."
    )


def lines(versus: dict, breakdown: dict | None, flicker: dict | None) -> list[str]:
    out = [f"Measured by `make bench` on {versus['machine']}:", ""]
    out += [line for row in versus["results"] if (line := against_the_original(row))]
    if breakdown:
        out.append(
            f"- The stack's own time a frame, at `{breakdown['model']}`: {breakdown['own_ms']:.1f} ms; "
            f"a stream paced as the page paces it keeps {breakdown['paced_share_of_direct']:.0%} of the "
            "model's own rate."
        )
    if flicker:
        ratio = flicker["goals"]["less_change"]["value"]
        ms = flicker["goals"]["align_ms"]["value"]
        out.append(
            f"- Steady depth: {ratio:.1f}x less frame-to-frame change of a still scene's colours "
            f"than each frame as answered, for {ms:.2f} ms a 640x480 frame."
        )
    return out


def write(results_dir: Path, readme: Path) -> None:
    def load(name: str) -> dict | None:
        path = results_dir / name
        return json.loads(path.read_text()) if path.is_file() else None

    paired = load(RESULTS)
    if paired is None:
        return
    replace_between(
        readme, BEGIN, END, "\n".join(lines(paired, load("breakdown.json"), load("flicker.json")))
    )
