"""The README's three headline figures, from the tables ``make bench`` just wrote (its JSON in
bench/results/): the full stack against the seed's own way, the stack's own time a frame, and
flicker with steady depth. Each names the run's machine, date and commit."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import replace_between

BEGIN, END = "<!-- headline:begin -->", "<!-- headline:end -->"
SEED = "original: PyTorch eager"
FULL_STACK = "full stack: WebSocket -> bridge -> Triton"


def _fps(results: list[dict], model: str, approach: str) -> float | None:
    rows = [
        r for r in results if r["model"] == model and r["approach"] == approach and r["size"] == "640x480"
    ]
    rows = [r for r in rows if r["concurrency"] == 1] or rows
    return rows[0]["fps"] if rows else None


def lines(bench: dict, breakdown: dict | None, flicker: dict | None) -> list[str]:
    out = [f"Measured by `make bench` on {bench['machine']}:", ""]
    for model in ("depth_anything_v2_small", "midas_dpt_beit_base_384"):
        seed, stack = _fps(bench["results"], model, SEED), _fps(bench["results"], model, FULL_STACK)
        if seed and stack:
            out.append(
                f"- `{model}` at 640x480 through the whole stack (WebSocket, bridge, Triton): "
                f"{stack:.2f} frames/s, {stack / seed:.2f}x the seed's PyTorch eager pipeline ({seed:.2f})."
            )
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

    bench = load("bench.json")
    if bench is None:
        return
    replace_between(readme, BEGIN, END, "\n".join(lines(bench, load("breakdown.json"), load("flicker.json"))))
