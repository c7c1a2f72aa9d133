"""Several Triton endpoints: spread sessions over them, move a session when its endpoint dies.

Each endpoint has its own gateway (channel, down-probe). A new session goes to the available
endpoint with the fewest sessions; when a session's endpoint becomes unavailable, the session
moves to another available one (the client hears it once) and the next frame goes there.
"""

from __future__ import annotations

import logging

from bridge.metrics import BridgeMetrics
from bridge.triton import TritonGateway

log = logging.getLogger(__name__)


def waiting_of(gateway: TritonGateway):
    return lambda: gateway.limit.waiting


class TritonPool:
    def __init__(
        self,
        urls: list[str],
        request_timeout_s: float,
        metrics: BridgeMetrics,
        max_in_flight: int = 0,
        client_factory=None,
        shared_memory_for=lambda url: None,
        admin_key: str = "",
    ) -> None:
        self.gateways = [
            TritonGateway(
                url,
                request_timeout_s,
                max_in_flight,
                client_factory(url) if client_factory else None,
                on_up=lambda up, url=url: metrics.endpoint_up.labels(url).set(1 if up else 0),
                shared_memory=shared_memory_for(url),
                admin_key=admin_key,
            )
            for url in urls
        ]
        for gateway in self.gateways:  # up until a request or a probe finds otherwise
            metrics.endpoint_up.labels(gateway.url).set(1)
            metrics.shared_memory_regions.labels(gateway.url).set_function(gateway.regions_registered)
            metrics.streams_waiting.labels(gateway.url).set_function(waiting_of(gateway))
        self.sessions = {gateway.url: 0 for gateway in self.gateways}
        self.metrics = metrics

    async def close(self) -> None:
        for gateway in self.gateways:
            await gateway.close()

    def available(self) -> list[TritonGateway]:
        return [gateway for gateway in self.gateways if gateway.available]

    def assign(self, exclude: TritonGateway | None = None) -> TritonGateway:
        """The least loaded available endpoint (any endpoint when none is available)."""
        candidates = (
            [g for g in self.available() if g is not exclude]
            or [g for g in self.gateways if g is not exclude]
            or self.gateways
        )
        chosen = min(candidates, key=lambda g: self.sessions[g.url])
        self._count(chosen, +1)
        return chosen

    def release(self, gateway: TritonGateway) -> None:
        self._count(gateway, -1)

    def _count(self, gateway: TritonGateway, change: int) -> None:
        self.sessions[gateway.url] += change
        self.metrics.endpoint_sessions.labels(gateway.url).set(self.sessions[gateway.url])

    def move(self, gateway: TritonGateway) -> TritonGateway | None:
        """Move a session off a failed endpoint; None when no other endpoint is available."""
        others = [g for g in self.available() if g is not gateway]
        if not others:
            return None
        self.release(gateway)
        moved = self.assign(exclude=gateway)
        log.info("moved a session from %s to %s", gateway.url, moved.url)
        return moved

    async def first_ready(self) -> TritonGateway | None:
        for gateway in self.gateways:
            if gateway.available and await gateway.server_ready():
                return gateway
        return None
