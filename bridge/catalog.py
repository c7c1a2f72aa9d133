"""The models a Triton endpoint serves, as the bridge knows them: one record per model
(``ModelInfo``), and the catalog that reads them all concurrently and keeps them for
``MODEL_LIST_TTL_S``, each model's speed following live traffic where it strays from the record
(bridge/observed.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from depthstream.contract import ModelSpec

MODEL_LIST_TTL_S = 5.0  # /api/models answers from a list this fresh at most


@dataclass(frozen=True)
class ModelInfo:
    name: str
    ready: bool
    random_weights: bool = False
    problem: str | None = None  # why it is not usable, when it is not
    ms_per_frame: float | None = None  # the model alone, one 640x480 frame, where it is served
    measured_on: str = ""  # that machine, as the serving side described it
    # set when ms_per_frame follows live traffic instead (bridge/observed.py): the record
    recorded_ms: float | None = None
    mismatch: bool = False  # served, but not as the contract says (not a matter of waiting)
    spec: ModelSpec | None = None  # what it is, as its served config records it (when ready)
    failed: bool = False  # in Triton's repository index, and it failed to load (problem: why)
    too_slow: bool = False  # served, but slower than this bridge's deadline (problem: by how much)


class _Follows(Protocol):
    def follow(self, info: ModelInfo) -> ModelInfo: ...


class ModelSource(Protocol):
    """What the catalog reads from: a gateway's models and its live observations."""

    @property
    def observed(self) -> _Follows: ...  # read only here: any object that follows will do

    async def models(self) -> list[ModelInfo]: ...


class ModelCatalog:
    """The served models as one Triton endpoint reports them: read concurrently, cached for
    ``MODEL_LIST_TTL_S``, refreshed by one request at a time however many ask; each model's
    speed as observed on live traffic where it strays from the record (bridge/observed.py)."""

    def __init__(self, ttl_s: float = MODEL_LIST_TTL_S) -> None:
        self.ttl_s = ttl_s
        # models that will be served soon (make demo exports them while the page streams): the
        # page lists them as coming, not as broken
        self.coming: frozenset[str] = frozenset()
        self._models: list[ModelInfo] = []
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self, gateway: ModelSource) -> list[ModelInfo]:
        async with self._lock:
            if time.monotonic() - self._read_at > self.ttl_s:
                self._models = await gateway.models()
                self._read_at = time.monotonic()
            return [gateway.observed.follow(info) for info in self._models]
