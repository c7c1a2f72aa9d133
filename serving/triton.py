"""Run the real ``tritonserver`` shipped in the nvidia-pytriton wheel on the embedded CPU flavour.

``EmbeddedTriton`` generates the embedded repository from ``model_repository/``
(serving.repository), starts Triton bound to 127.0.0.1 with its admin APIs restricted, waits
until every model is ready, and stops it cleanly. ``python -m serving`` runs it supervised.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from depthstream.accelerator import DEVICES
from depthstream.contract import MODEL_NAME
from depthstream.engines import ENGINE_CHOICES, openvino_version
from depthstream.model_config import exported_models
from depthstream.request import SHM_KEY_NAME
from depthstream.settings import Settings, SettingsError, setting
from serving.repository import EmptyRepositoryError, generate

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent  # holds the depthstream package

# Triton's admin APIs, each group behind its own random per-start key: the bridge next to this
# Triton holds the shared-memory key only (it registers its frames' regions), never the one that
# could change what is served
ADMIN_APIS = "model-repository,logging,trace"
ADMIN_KEY_HEADER = "admin-key"  # the header that carries the admin key (its name in the flags below)
SHARED_MEMORY_API = "shared-memory"


class TritonStartError(Exception):
    """Triton could not start or did not become ready; the message says why."""


@dataclass(frozen=True)
class TritonSettings(Settings):
    """The embedded Triton's settings: flags, then variables (``TRITON_*``; the ports as
    ``HTTP_PORT``, ``GRPC_PORT``, ``METRICS_PORT`` and the repository as ``MODEL_REPOSITORY``,
    as the Makefile passes them), then defaults."""

    ENV_PREFIX = "TRITON_"
    SECRETS = frozenset({"admin_key", "shm_key"})

    repository: Path = setting(Path("model_repository"), env="MODEL_REPOSITORY", help="exported models")
    workdir: Path = setting(Path("build/embedded"), help="where the embedded flavour is generated")
    host: str = setting("127.0.0.1", help="address Triton binds to (HTTP, gRPC, metrics)")
    http_port: int = setting(8000, env="HTTP_PORT")
    grpc_port: int = setting(8001, env="GRPC_PORT")
    metrics_port: int = setting(8002, env="METRICS_PORT")
    models: tuple[str, ...] = setting((), help="comma-separated; empty: every exported model")
    threads: int | None = setting(None, help="ONNX Runtime intra-op threads per model; empty: all cores")
    dynamic_batching: bool = setting(False, help="keep the production batcher (serving.repository)")
    simulated_extra_ms: int = setting(0, help="added to every model run: a slower machine, for drills")
    device: str = setting(
        "auto", help="auto (a GPU where ONNX Runtime's GPU build finds one), cpu, cuda or tensorrt"
    )
    engine: str = setting(
        "auto", help="auto (the faster of ONNX Runtime and OpenVINO here, measured), onnxruntime or openvino"
    )
    ready_timeout_s: float = setting(120.0, help="how long to wait for every model to be ready")
    # none: the models at start, for good (the lock-down); explicit: the process holding the admin
    # key may load more later (make demo, which brings in what it exports after the first depth)
    model_control: str = setting("none", help="none or explicit (models added by the admin-key holder)")
    admin_key: str = setting(flag=False, default_factory=lambda: secrets.token_hex(16))
    shm_key: str = setting(flag=False, default_factory=lambda: secrets.token_hex(16))

    def validate(self) -> None:
        port = "a TCP port (1-65535)"
        self.require_all(
            [
                ("host", bool(self.host.strip()), "a host name or address"),
                ("http_port", 1 <= self.http_port <= 65535, port),
                ("grpc_port", 1 <= self.grpc_port <= 65535, port),
                ("metrics_port", 1 <= self.metrics_port <= 65535, port),
                (
                    "models",
                    all(MODEL_NAME.fullmatch(name) for name in self.models),
                    "model names: lower case letters, digits and _ (each must be in the repository)",
                ),
                ("threads", self.threads is None or self.threads >= 1, "at least 1 (or empty: all cores)"),
                ("simulated_extra_ms", self.simulated_extra_ms >= 0, "zero or more"),
                ("device", self.device in DEVICES, f"one of {', '.join(DEVICES)}"),
                ("engine", self.engine in ENGINE_CHOICES, f"one of {', '.join(ENGINE_CHOICES)}"),
                (
                    "engine",
                    self.engine != "openvino" or openvino_version() is not None,
                    "auto or onnxruntime: OpenVINO is not installed (make setup installs it)",
                ),
                ("ready_timeout_s", self.ready_timeout_s > 0, "positive"),
                ("model_control", self.model_control in ("none", "explicit"), "none or explicit"),
            ]
        )
        ports = list(self.ports.values())
        if len(set(ports)) != len(ports):
            raise SettingsError(
                f"HTTP_PORT, GRPC_PORT and METRICS_PORT (--http-port, --grpc-port, --metrics-port) "
                f"must differ; got {ports}"
            )

    @classmethod
    def on_free_ports(cls, repository: Path, workdir: Path, **options) -> TritonSettings:
        """An embedded Triton of its own (tests, benchmarks), on ports the OS says are free."""
        return cls(
            repository=repository,
            workdir=workdir,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            **options,
        )

    @property
    def ports(self) -> dict[str, int]:
        return {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    """LD_LIBRARY_PATH for Triton's bundled libraries; PYTHONPATH so the stub finds numpy, ORT and
    the depthstream package (its session settings and providers)."""
    _, libs = _pytriton_dirs()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    site = sysconfig.get_paths()["purelib"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, str(ROOT), env.get("PYTHONPATH")]))
    # the stub also looks for this interpreter's environment through PATH (as pytriton does)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def command(
    settings: TritonSettings, repository: Path, backends: Path, shm_prefix: str, models: list[str]
) -> list[str]:
    server_dir, _ = _pytriton_dirs()
    if settings.model_control == "explicit":  # the models of the start, loaded; more by load_models
        control = ["--model-control-mode=explicit", *(f"--load-model={name}" for name in models)]
    else:
        control = ["--model-control-mode=none"]
    admin = f"{ADMIN_APIS}:{ADMIN_KEY_HEADER}={settings.admin_key}"
    shared_memory = f"{SHARED_MEMORY_API}:{SHM_KEY_NAME}={settings.shm_key}"
    return [
        str(server_dir / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        *control,
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-address={settings.host}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={settings.host}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={settings.host}",
        f"--metrics-port={settings.metrics_port}",
        f"--http-restricted-api={admin}",
        f"--http-restricted-api={shared_memory}",
        f"--grpc-restricted-protocol={admin}",
        f"--grpc-restricted-protocol={shared_memory}",
        # the Python backend's regions under a name of this server's own: a killed Triton's are
        # found and removed (EmbeddedTriton.remove_leftover_regions), not left in /dev/shm
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
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
        self.shm_prefix = f"depthstream-triton-{secrets.token_hex(6)}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, as Triton's metrics endpoint says now."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://{self.settings.host}:{self.settings.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    @property
    def served_repository(self) -> Path:
        """The embedded flavour Triton serves, generated from the exported models at start."""
        return self.settings.workdir / "model_repository"

    def start(self) -> EmbeddedTriton:

        s = self.settings
        check_ports_free(s)
        repository = self.served_repository
        try:
            self.models = generate(
                s.repository,
                repository,
                list(s.models) or None,
                s.threads,
                s.dynamic_batching,
                s.simulated_extra_ms,
                s.device,
                s.engine,
            )
        except EmptyRepositoryError as exc:
            raise TritonStartError(str(exc)) from None
        backends = prepare_backends(s.workdir)
        self.remove_leftover_regions()  # a previous run of this server that was killed
        output = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (owned by Popen)
        log.info("starting tritonserver: models %s, gRPC %s", ", ".join(self.models), s.grpc_url)
        self.process = subprocess.Popen(
            command(s, repository.resolve(), backends.resolve(), self.shm_prefix, self.models),
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

    def add_models(self) -> list[str]:
        """Load the exported models this Triton does not serve yet (model control ``explicit``:
        with the admin key this process holds); the names added. Streams go on meanwhile."""
        if self.settings.model_control != "explicit":
            raise TritonStartError("models are added only under model_control explicit")
        s = self.settings
        known = set(self.models)
        wanted = [name for name in exported_models(s.repository) if name not in known]
        if s.models:
            wanted = [name for name in wanted if name in s.models]
        added = generate(
            s.repository, self.served_repository, wanted, s.threads, s.dynamic_batching,
            s.simulated_extra_ms, s.device, s.engine, replace=False,
        ) if wanted else []  # fmt: skip
        for name in added:
            request = urllib.request.Request(
                f"{s.http_url}/v2/repository/models/{name}/load",
                data=b"{}",
                method="POST",
                headers={ADMIN_KEY_HEADER: s.admin_key, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=s.ready_timeout_s):
                pass  # answers once the model is loaded (or with an HTTP error: raised)
            self.models.append(name)
            log.info("tritonserver now serves %s", name)
        return added

    def wait_ready(self) -> None:
        assert self.process is not None, "start() launches it first"
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
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Triton finishes in-flight requests, then exits
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver ignored SIGTERM for %.0f s; killing it", timeout_s)
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.remove_leftover_regions()

    def remove_leftover_regions(self) -> list[str]:
        """The Python backend's shared memory a Triton that was killed left behind (one that
        exits cleanly removes its own); the names removed."""
        shm = Path("/dev/shm")
        left = sorted(shm.glob(f"{self.shm_prefix}*")) if shm.is_dir() else []
        for path in left:
            path.unlink(missing_ok=True)
        return [path.name for path in left]

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
