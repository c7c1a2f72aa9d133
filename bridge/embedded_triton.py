"""Run the real ``tritonserver`` shipped in the nvidia-pytriton wheel on the embedded CPU flavour.

``python -m bridge.embedded_triton`` (``make serve``) generates the embedded repository from
``model_repository/``, starts Triton bound to 127.0.0.1 with its admin APIs restricted, waits
until every model is ready, and stops it cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"


class TritonStartError(Exception):
    """Triton could not start or did not become ready; the message says why."""


@dataclass(frozen=True)
class TritonSettings:
    repository: Path = Path("model_repository")
    workdir: Path = Path("build/embedded")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    models: tuple[str, ...] = ()  # empty: every exported model
    threads: int | None = None  # ONNX Runtime intra-op threads per model; None: all cores
    dynamic_batching: bool = False  # see export.configs.embedded_config
    simulated_extra_ms: int = 0  # added to every model run: a slower machine, for overload tests
    ready_timeout_s: float = 120.0
    admin_key: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def ports(self) -> dict[str, int]:
        return {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


def _pytriton_dirs() -> tuple[Path, Path]:
    import pytriton

    package = Path(pytriton.__file__).resolve().parent
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def check_ports_free(settings: TritonSettings) -> None:
    for name, port in settings.ports.items():
        with socket.socket() as probe:
            # like Triton itself: a port in TIME_WAIT after a restart is free, a listening one is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError:
                variable = {"HTTP": "HTTP_PORT", "gRPC": "GRPC_PORT", "metrics": "METRICS_PORT"}[name]
                raise TritonStartError(
                    f"port {port} ({name}) on {settings.host} is taken; stop what uses it or "
                    f"choose another with {variable}=..."
                ) from None


def prepare_backends(workdir: Path) -> Path:
    """A backend directory holding the Python backend and the stub for this Python version."""
    server_dir, _ = _pytriton_dirs()
    python_dir = workdir / "backends" / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonStartError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    for source in (
        *(server_dir / "backends" / "python").glob("*.py"),
        server_dir / "backends" / "python" / "libtriton_python.so",
        stub,
    ):
        # copy then rename: a stub still running from a previous start stays untouched ("text file busy")
        staging = python_dir / f".{source.name}.tmp"
        shutil.copy2(source, staging)
        os.replace(staging, python_dir / source.name)
    return python_dir.parent


def server_env() -> dict[str, str]:
    """LD_LIBRARY_PATH for Triton's bundled libraries; PYTHONPATH so the stub finds numpy and ORT."""
    _, libs = _pytriton_dirs()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    site = sysconfig.get_paths()["purelib"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, env.get("PYTHONPATH")]))
    # the stub also looks for this interpreter's environment through PATH (as pytriton does)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def command(settings: TritonSettings, repository: Path, backends: Path) -> list[str]:
    server_dir, _ = _pytriton_dirs()
    restricted = f"{RESTRICTED_APIS}:admin-key={settings.admin_key}"
    return [
        str(server_dir / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-address={settings.host}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={settings.host}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={settings.host}",
        f"--metrics-port={settings.metrics_port}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
        "--log-verbose=0",
    ]


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM Triton if this process dies without stopping it (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class EmbeddedTriton:
    """A ``tritonserver`` child process; use as a context manager or start()/stop()."""

    def __init__(self, settings: TritonSettings, log_path: Path | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.models: list[str] = []

    def start(self) -> EmbeddedTriton:
        from export.embedded import EmptyRepositoryError, generate

        s = self.settings
        check_ports_free(s)
        repository = s.workdir / "model_repository"
        try:
            self.models = generate(
                s.repository,
                repository,
                list(s.models) or None,
                s.threads,
                s.dynamic_batching,
                s.simulated_extra_ms,
            )
        except EmptyRepositoryError as exc:
            raise TritonStartError(str(exc)) from None
        backends = prepare_backends(s.workdir)
        output = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (owned by Popen)
        log.info("starting tritonserver: models %s, gRPC %s", ", ".join(self.models), s.grpc_url)
        self.process = subprocess.Popen(
            command(s, repository.resolve(), backends.resolve()),
            env=server_env(),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if output:
            output.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        urls = [f"{self.settings.http_url}/v2/models/{name}/ready" for name in self.models]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise TritonStartError(f"tritonserver exited with code {self.process.returncode}{where}")
            if all(_ready(url) for url in urls):
                log.info("tritonserver ready: %s", ", ".join(self.models))
                return
            time.sleep(0.2)
        self.stop()
        raise TritonStartError(f"tritonserver not ready after {self.settings.ready_timeout_s:.0f} s")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # Triton finishes in-flight requests, then exits
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver ignored SIGTERM for %.0f s; killing it", timeout_s)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def start_or_report(self) -> bool:
        """Start; on failure log why, leave nothing running, and return False (for CLIs)."""
        try:
            self.start()
        except TritonStartError as exc:
            log.error("%s", exc)
            self.stop()
            return False
        return True

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a TCP port (1-65535); ports come from the flags or HTTP_PORT, GRPC_PORT, METRICS_PORT"
        )
    return int(value)


def parse_args(argv: list[str] | None = None) -> TritonSettings:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m bridge.embedded_triton", description=__doc__)
    parser.add_argument(
        "--repository", type=Path, default=Path(env.get("MODEL_REPOSITORY", "model_repository"))
    )
    parser.add_argument("--host", default=env.get("TRITON_HOST", "127.0.0.1"))
    parser.add_argument("--http-port", type=_port, default=env.get("HTTP_PORT", "8000"))
    parser.add_argument("--grpc-port", type=_port, default=env.get("GRPC_PORT", "8001"))
    parser.add_argument("--metrics-port", type=_port, default=env.get("METRICS_PORT", "8002"))
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per model")
    args = parser.parse_args(argv)
    ports = [args.http_port, args.grpc_port, args.metrics_port]
    if len(set(ports)) != 3:
        parser.error(f"HTTP, gRPC and metrics ports must differ; got {ports}")
    return TritonSettings(
        repository=args.repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        threads=args.threads,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
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
    supervisor.stop()
    supervisor.join()
    log.info("stopping tritonserver")
    server.stop()
    return 1 if supervisor.gave_up else 0


if __name__ == "__main__":
    sys.exit(main())
