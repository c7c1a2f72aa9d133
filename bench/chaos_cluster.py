"""The processes ``make chaos`` runs and hurts: two embedded Tritons, two bridges, HAProxy.

Each process's life is recorded (its pid, when it started and how it ended) with samples of its
memory, open descriptors and, for a bridge, its event loop's tasks, streams waiting and counters
from its own /metrics, so that growth is judged per life and the metrics are compared with what
the clients counted. ``stop`` ends every process, frozen ones included, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster import Balancer
from bench.harness import Bridge
from bench.measure import process_tree, rss_mb
from serving.triton import ADMIN_KEY_HEADER, EmbeddedTriton, TritonSettings, free_port

# the bridge's counters and gauges a sample keeps (summed over their labels)
BRIDGE_SERIES = {
    "received": "depthstream_frames_received_total",
    "answered": "depthstream_frames_answered_total",
    "dropped": "depthstream_frames_dropped_total",
    "failed": "depthstream_frames_failed_total",
    "rejected": "depthstream_frames_rejected_total",
    "refused_busy": 'depthstream_connections_refused_total{reason="busy"}',
    "slow_clients": "depthstream_slow_clients_total",
    "connections": "depthstream_connections ",
    "tasks": "depthstream_asyncio_tasks ",
    "waiting": "depthstream_streams_waiting",
}
BRIDGE_FLAGS = ("--request-timeout-s", "3", "--max-connections", "16", "--send-timeout-s", "5")
MAX_CONNECTIONS = 16  # per bridge, as BRIDGE_FLAGS say


@dataclass
class Life:
    """One process from its start to its end (a restart is a new life)."""

    name: str  # triton-a, bridge1, ...
    pid: int
    started_s: float  # seconds since the run began
    ended_s: float | None = None
    ended_by: str = ""  # SIGKILL, SIGTERM at the end
    samples: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "samples"} | {"samples": len(self.samples)}


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float] | None:
    """The bridge's series of BRIDGE_SERIES now; None when it does not answer (frozen, gone)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as response:
            lines = response.read().decode().splitlines()
    except OSError:
        return None
    return {
        key: sum(float(line.split()[-1]) for line in lines if line.startswith(prefix))
        for key, prefix in BRIDGE_SERIES.items()
    }


def open_descriptors(pids: list[int]) -> int:
    count = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            count += len(os.listdir(f"/proc/{pid}/fd"))
    return count


class Cluster:
    def __init__(self, repository: Path, workdir: Path, logs: Path, models: tuple[str, ...]) -> None:
        self.repository, self.workdir, self.logs, self.models = repository, workdir, logs, models
        self.began = time.monotonic()
        self.tritons: list[EmbeddedTriton] = []
        self.bridges: list[Bridge] = []
        self.ports: list[int] = []
        self.balancer: Balancer | None = None
        self.lives: list[Life] = []
        self.frozen: set[int] = set()  # pids (or process groups, negative) stopped now

    def now_s(self) -> float:
        return time.monotonic() - self.began

    # --- starting --------------------------------------------------------------------------
    def start(self) -> None:
        for name in ("a", "b"):
            settings = TritonSettings.on_free_ports(
                self.repository,
                self.workdir / f"triton-{name}",
                threads=1,
                models=self.models,
                model_control="explicit",  # a model is unloaded and loaded again under traffic
            )
            self.tritons.append(
                self._start_triton(EmbeddedTriton(settings, self.logs / f"tritonserver-{name}.log"))
            )
        self.ports = [free_port() for _ in range(2)]
        self.bridges = [self._start_bridge(i) for i in range(2)]
        self.balancer = Balancer(self.ports, self.workdir, self.logs / "haproxy.log")
        self.lives.append(Life("haproxy", self.balancer.process.pid, self.now_s()))

    def triton_name(self, i: int) -> str:
        return f"triton-{'ab'[i]}"

    def bridge_name(self, i: int) -> str:
        return f"bridge{i + 1}"  # as HAProxy names it (its SERVED_BY header)

    def _start_triton(self, server: EmbeddedTriton) -> EmbeddedTriton:
        server.start()
        assert server.process is not None
        self.lives.append(Life(server.settings.workdir.name, server.process.pid, self.now_s()))
        return server

    def _start_bridge(self, i: int) -> Bridge:
        urls = ",".join(server.settings.grpc_url for server in self.tritons)
        bridge = Bridge(urls, *BRIDGE_FLAGS, log=self.logs / f"bridge{i + 1}.log", port=self.ports[i])
        self.lives.append(Life(self.bridge_name(i), bridge.process.pid, self.now_s()))
        return bridge

    def restart_triton(self, i: int) -> None:
        self.tritons[i] = self._start_triton(
            EmbeddedTriton(self.tritons[i].settings, self.tritons[i].log_path)
        )

    def restart_bridge(self, i: int) -> None:
        self.bridges[i] = self._start_bridge(i)

    # --- hurting ---------------------------------------------------------------------------
    def life_of(self, pid: int) -> Life:
        return next(life for life in reversed(self.lives) if life.pid == pid)

    def kill_triton(self, i: int) -> None:
        process = self.tritons[i].process
        assert process is not None
        os.killpg(process.pid, signal.SIGKILL)  # its Python backend stubs too
        process.wait()
        self.tritons[i].remove_leftover_regions()
        self._ended(process.pid, "SIGKILL")

    def kill_bridge(self, i: int) -> None:
        process = self.bridges[i].process
        process.kill()
        process.wait()
        self._ended(process.pid, "SIGKILL")

    def _ended(self, pid: int, how: str) -> None:
        life = self.life_of(pid)
        life.ended_s, life.ended_by = self.now_s(), how

    def freeze(self, target: int) -> None:
        """SIGSTOP a pid, or a process group when negative (a Triton and its stubs)."""
        os.kill(target, signal.SIGSTOP)
        self.frozen.add(target)

    def thaw(self, target: int) -> None:
        os.kill(target, signal.SIGCONT)
        self.frozen.discard(target)

    def triton_admin(self, i: int, model: str, action: str, timeout_s: float = 60) -> str:
        """Unload or load a model on Triton ``i`` with its admin key: "" or Triton's error."""
        s = self.tritons[i].settings
        request = urllib.request.Request(
            f"{s.http_url}/v2/repository/models/{model}/{action}",
            data=b"{}",
            method="POST",
            headers={ADMIN_KEY_HEADER: s.admin_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                return ""
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}").get("error", str(exc))
        except OSError as exc:
            return str(exc)

    # --- watching --------------------------------------------------------------------------
    def sample(self) -> None:
        """One sample of every live process (called from a thread every few seconds)."""
        at = self.now_s()
        urls = {bridge.process.pid: bridge.url for bridge in self.bridges}
        for life in self.lives:
            if life.ended_s is not None:
                continue
            pids = process_tree(life.pid)
            try:
                rss = sum(rss_mb(pid) for pid in pids)
            except OSError:
                continue  # ended between the listing and the read
            row: dict = {"at_s": round(at, 1), "rss_mb": round(rss, 2), "fds": open_descriptors(pids)}
            if life.pid in urls and life.pid not in self.frozen:
                row.update(scrape(urls[life.pid]) or {})
            life.samples.append(row)

    def bridge_counts(self, i: int) -> dict[str, float] | None:
        return scrape(self.bridges[i].url)

    def pids(self) -> list[int]:
        return [life.pid for life in self.lives]

    # --- stopping --------------------------------------------------------------------------
    def stop(self) -> None:
        """Every process this cluster started ends here, frozen or not, whatever failed."""
        for target in list(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                self.thaw(target)
        if self.balancer is not None:
            with contextlib.suppress(Exception):
                self.balancer.stop()
        for bridge in self.bridges:
            with contextlib.suppress(Exception):
                bridge.stop()
            if bridge.process.poll() is None:
                bridge.process.kill()
        for server in self.tritons:
            with contextlib.suppress(Exception):
                server.stop()
        for life in self.lives:
            if life.ended_s is None:
                life.ended_s, life.ended_by = self.now_s(), "SIGTERM at the end"


def still_running(pids: list[int]) -> list[int]:
    """Of these pids, those still alive (not zombies): what ``stop`` left behind."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive
