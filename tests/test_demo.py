"""make demo's start-up lines, from the configs a real embedded Triton was started with."""

from __future__ import annotations

from demo.__main__ import served_models, start_up_lines
from tests.servers import bridge_settings


def test_the_start_up_lines_say_where_to_open_it_and_what_is_served(triton):
    infos = served_models(triton)
    assert infos and all(info.ready and info.ms_per_frame and info.ms_per_frame > 0 for info in infos)
    assert all("threads" in info.measured_on for info in infos)
    lines = start_up_lines(bridge_settings(triton.settings.grpc_url), triton)
    assert lines[0].startswith("depthstream is live: open http://127.0.0.1:")
    assert f"Triton serves {len(infos)} models on gRPC {triton.settings.grpc_url}" in lines[1]
    assert lines[3].startswith("  the page opens on ") and "frames/s" in lines[3]
    # the tiny models are exported from a checkpoint directory: not the random-weights smoke mode
    assert "RANDOM WEIGHTS" not in "\n".join(lines) and lines[-1] == "  Ctrl-C stops both."
