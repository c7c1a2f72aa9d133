"""Keep the embedded Triton alive: report how it died, restart it with backoff, give up loudly."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from serving.triton import EmbeddedTriton, TritonStartError

log = logging.getLogger(__name__)


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: its exit code, or the signal that killed it."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (often the kernel's OOM killer: see `dmesg`)" if -returncode == signal.SIGKILL else ""
    return f"was killed by {name}{hint}"


def log_tail(path: Path | None, lines: int = 8) -> str:
    if path is None or not path.is_file():
        return ""
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - 16384))
        tail = stream.read().decode(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    | {line}" for line in tail)


class TritonSupervisor(threading.Thread):
    """Watches a started EmbeddedTriton: when it dies (the OOM killer, a crash) says so at once,
    with how it ended and the tail of its log, and starts it again after a growing pause. After
    ``max_restarts`` failures in a row it gives up loudly and calls ``on_give_up``.

    Clients need do nothing: the bridge's streams resume by themselves once Triton is back."""

    def __init__(
        self,
        server: EmbeddedTriton,
        on_give_up=None,
        max_restarts: int = 5,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        super().__init__(name="triton-supervisor", daemon=True)
        self.server = server
        self.on_give_up = on_give_up
        self.max_restarts = max_restarts
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self.restarts = 0
        self.gave_up = False
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def shutdown(self) -> None:
        """Stop watching, then stop Triton (Ctrl-C, SIGTERM, or after giving up)."""
        self.stop()
        self.join()
        log.info("stopping tritonserver")
        self.server.stop()

    def run(self) -> None:
        failures, up_since = 0, time.monotonic()
        while not self._stopping.wait(0.2):
            process = self.server.process
            if process is None or process.poll() is None:
                continue
            if time.monotonic() - up_since > self.healthy_after_s:
                failures = 0  # it ran well for a while: this is a new incident, not a crash loop
            self._report_death(process)
            while not self._stopping.is_set():
                failures += 1
                if failures > self.max_restarts:
                    self._give_up()
                    return
                backoff_s = min(self.first_backoff_s * 2 ** (failures - 1), self.max_backoff_s)
                log.warning(
                    "restarting tritonserver in %.1f s (attempt %d of %d)",
                    backoff_s,
                    failures,
                    self.max_restarts,
                )
                if self._stopping.wait(backoff_s):
                    return
                try:
                    self.server.start()
                except TritonStartError as exc:
                    log.error("tritonserver did not come back: %s", exc)
                    self.server.stop()
                    continue
                self.restarts += 1
                up_since = time.monotonic()
                log.warning(
                    "tritonserver is back (restart %d): %s", self.restarts, ", ".join(self.server.models)
                )
                break

    def _report_death(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # its Python-backend stubs, if any outlived it
        tail = log_tail(self.server.log_path)
        where = f"; the end of its log ({self.server.log_path}):\n{tail}" if tail else ""
        log.error("tritonserver (pid %d) %s%s", process.pid, describe_exit(process.returncode), where)

    def _give_up(self) -> None:
        self.gave_up = True
        log.critical(
            "tritonserver failed %d times in a row; giving up. Fix the cause above, then start again.",
            self.max_restarts,
        )
        if self.on_give_up is not None:
            self.on_give_up()
