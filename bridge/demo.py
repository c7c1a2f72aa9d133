"""``make demo``: the embedded Triton and the bridge together; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import cv2

from bridge.__main__ import build_server, run_until_stopped
from bridge.embedded_triton import EmbeddedTriton, TritonSupervisor
from bridge.embedded_triton import parse_args as parse_triton_args
from bridge.settings import SettingsError, parse_settings

log = logging.getLogger("demo")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m bridge.demo", description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args, bridge_argv = parser.parse_known_args(argv)
    # Triton's ports from HTTP_PORT, GRPC_PORT, METRICS_PORT, validated as `make serve` does
    triton_settings = parse_triton_args(["--repository", str(args.repository)])
    try:
        settings = parse_settings(bridge_argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = replace(settings, triton_url=triton_settings.grpc_url)
    triton_log = Path("build/tritonserver.log")
    triton_log.parent.mkdir(parents=True, exist_ok=True)
    triton = EmbeddedTriton(triton_settings, log_path=triton_log)
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
            f"(Triton gRPC {triton_settings.grpc_url}, its log in {triton_log}). Ctrl-C stops it.\n",
            flush=True,
        )
        run_until_stopped(server)
    finally:
        supervisor.stop()
        supervisor.join()
        log.info("stopping tritonserver")
        triton.stop()
    return 1 if supervisor.gave_up else 0


if __name__ == "__main__":
    sys.exit(main())
