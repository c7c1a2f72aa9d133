"""``make demo``: the embedded Triton (supervised) and the bridge together; Ctrl-C stops both.

``python -m serving.demo [--repository DIR] [bridge flags]``: Triton's settings come from the
environment (``HTTP_PORT``, ``GRPC_PORT``, ``METRICS_PORT``, ``TRITON_*``) and ``--repository``;
every other flag is the bridge's. Both are validated before anything starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import cv2

from bridge.server import build_server, run_until_stopped
from bridge.settings import parse_settings
from depthstream.settings import SettingsError, parse
from serving.supervisor import TritonSupervisor
from serving.triton import EmbeddedTriton, TritonSettings

log = logging.getLogger("demo")
TRITON_LOG = Path("build/tritonserver.log")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m serving.demo", description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args, bridge_argv = parser.parse_known_args(argv)
    try:
        triton_settings = parse(TritonSettings, ["--repository", str(args.repository)])
        settings = parse_settings(bridge_argv)
        settings = replace(settings, triton_url=triton_settings.grpc_url)  # validated again
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    TRITON_LOG.parent.mkdir(parents=True, exist_ok=True)
    triton = EmbeddedTriton(triton_settings, log_path=TRITON_LOG)
    if not triton.start_or_report():
        return 2
    # Triton dies (the OOM killer, a crash): say so, restart it; give up by stopping the demo
    supervisor = TritonSupervisor(triton, on_give_up=lambda: os.kill(os.getpid(), signal.SIGTERM))
    supervisor.start()
    cv2.setNumThreads(1)
    try:
        server = build_server(settings)
        print(
            f"\n  depthstream is live: open http://{settings.host}:{settings.port}/ "
            f"(Triton gRPC {triton_settings.grpc_url}, its log in {TRITON_LOG}). Ctrl-C stops it.\n",
            flush=True,
        )
        run_until_stopped(server)
    finally:
        supervisor.shutdown()
    return 1 if supervisor.gave_up else 0


if __name__ == "__main__":
    sys.exit(main())
