"""``python -m serving`` (``make serve``): the real ``tritonserver`` from the nvidia-pytriton
wheel on the embedded CPU flavour of ``model_repository/``, bound to 127.0.0.1 with its admin
APIs restricted, supervised (restarted if it dies), stopped cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import time

from depthstream.settings import SettingsError, parse
from serving.supervisor import TritonSupervisor
from serving.triton import EmbeddedTriton, TritonSettings

log = logging.getLogger("serving")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = parse(TritonSettings, argv, prog="python -m serving", description=__doc__)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = EmbeddedTriton(settings)
    stop = {"requested": False}

    def request_stop(signum: int, _frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if not server.start_or_report():
        return 2
    print(
        f"Triton serving {', '.join(server.models)}: gRPC {settings.grpc_url}, HTTP "
        f"{settings.http_url}, metrics http://{settings.host}:{settings.metrics_port}/metrics. "
        "Ctrl-C stops it.",
        flush=True,
    )
    supervisor = TritonSupervisor(server)
    supervisor.start()
    while not stop["requested"] and supervisor.is_alive():
        time.sleep(0.2)
    supervisor.shutdown()
    return 1 if supervisor.gave_up else 0


if __name__ == "__main__":
    sys.exit(main())
