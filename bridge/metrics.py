"""Prometheus metrics for the bridge (its own registry, so each app instance counts alone)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# 1 ms .. 10 s: bridge stages are milliseconds, CPU inference hundreds of milliseconds.
BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("depthstream_frames_received", "Binary frames received", registry=r)
        self.frames_answered = Counter(
            "depthstream_frames_answered", "Frames answered with depth", ["model"], registry=r
        )
        self.frames_dropped = Counter(
            "depthstream_frames_dropped",
            "Frames replaced by a newer one before processing (latest frame wins)",
            registry=r,
        )
        self.frames_expired = Counter(
            "depthstream_frames_expired",
            "Frames not sent to Triton because they could not be answered before their deadline "
            "(also counted as dropped)",
            registry=r,
        )
        self.frames_rate_limited = Counter(
            "depthstream_frames_rate_limited",
            "Frames dropped for exceeding max_fps (also counted as dropped)",
            registry=r,
        )
        self.connections_refused = Counter(
            "depthstream_connections_refused", "WebSocket connections refused", ["reason"], registry=r
        )
        self.slow_clients = Counter(
            "depthstream_slow_clients", "Connections closed because the client read nothing", registry=r
        )
        self.frames_rejected = Counter(
            "depthstream_frames_rejected", "Frames refused as bad input", ["code"], registry=r
        )
        self.frames_failed = Counter(
            "depthstream_frames_failed", "Frames that failed at the model server", ["code"], registry=r
        )
        self.control_rejected = Counter(
            "depthstream_control_rejected", "Control messages refused", ["code"], registry=r
        )
        self.endpoint_sessions = Gauge(
            "depthstream_endpoint_sessions",
            "Streams placed on each Triton endpoint",
            ["endpoint"],
            registry=r,
        )
        self._add_gauges(r)

    def _add_gauges(self, r: CollectorRegistry) -> None:
        """What the bridge holds now, and how long each stage of a frame takes."""
        self.endpoint_up = Gauge(
            "depthstream_endpoint_up",
            "1 while a Triton endpoint takes requests, 0 from a failure until its probe finds it back",
            ["endpoint"],
            registry=r,
        )
        self.shared_memory_regions = Gauge(
            "depthstream_shared_memory_regions",
            "Shared-memory regions registered with each Triton endpoint: free, in a request, or retiring "
            "after an abandoned one (0: frames go over plain gRPC)",
            ["endpoint"],
            registry=r,
        )
        self.connections = Gauge("depthstream_connections", "Open WebSocket connections", registry=r)
        # what a leak would grow: watched by make chaos over hours of faults
        self.streams_waiting = Gauge(
            "depthstream_streams_waiting",
            "Streams waiting for a turn at each Triton endpoint (its in-flight limit)",
            ["endpoint"],
            registry=r,
        )
        self.asyncio_tasks = Gauge(
            "depthstream_asyncio_tasks", "Tasks alive in the bridge's event loop", registry=r
        )
        self.stage_seconds = Histogram(
            "depthstream_stage_seconds", "Time per frame and stage", ["stage"], buckets=BUCKETS_S, registry=r
        )

    def observe(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
