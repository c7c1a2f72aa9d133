"""The bridge's side of Triton: one shared aio gRPC client, contract checks, typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, model_config_pb2
from tritonclient.utils import InferenceServerException

from bridge.admission import InFlightLimit
from bridge.catalog import ModelInfo
from bridge.errors import BadOutput, FrameError
from bridge.observed import ObservedTimes
from bridge.protocol import ErrorCode
from bridge.shared_memory import Region, RegionPool
from depthstream import contract
from depthstream.contract import (
    CHECKPOINTS,
    INTRINSICS_NAME,
    MODELS,
    OUTPUT_NAME,
    ModelSpec,
    contract_violations,
    declares_intrinsics,
    register,
)
from depthstream.model_config import is_random_weights, served_speed, spec_of
from depthstream.request import ADMIN_KEY_HEADER, depth_request

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0
PROBE_FIRST_DELAY_S = 0.25
PROBE_MAX_DELAY_S = 5.0
CHECKED_TTL_S = 1.0  # a model found ready is not asked about again for this long (model switches)


class TritonError(FrameError):
    """A failure talking to Triton, with the code the client sees. ``message`` is safe to show:
    Triton's own error text stays in the bridge's log."""


class TritonUnavailable(TritonError):
    code = ErrorCode.TRITON_UNAVAILABLE


class TritonTimeout(TritonError):
    code = ErrorCode.TIMEOUT


class TritonBusy(TritonError):
    code = ErrorCode.BUSY


class SharedMemoryGone(Exception):
    """Triton no longer knows a region this bridge registered: it restarted."""


# the start of Triton's error for a request naming a region it does not have
SHARED_MEMORY_MISSING = "unable to find shared memory region"


class ModelNotReady(TritonError):
    code = ErrorCode.MODEL_NOT_READY


class ModelMismatch(TritonError):
    code = ErrorCode.MODEL_MISMATCH


def _classify(exc: InferenceServerException, model: str) -> TritonError:
    """Map Triton's answer to the client's error code: by gRPC status first; the text only tells
    a full queue from a server that is down (Triton says UNAVAILABLE for both)."""
    status = str(exc.status() or "").removeprefix("StatusCode.")
    text = (exc.message() or "").lower()
    log.warning("Triton error for %s: %s %s", model, status, exc.message())
    if status == "RESOURCE_EXHAUSTED":
        return TritonBusy(f"{model} is busy; frame skipped")
    if status == "DEADLINE_EXCEEDED":
        return TritonTimeout(f"{model} did not answer in time")
    if status == "UNAVAILABLE":
        if "exceeds maximum queue size" in text or "timeout expired" in text:
            return TritonBusy(f"{model} is busy; frame skipped")
        return TritonUnavailable("the model server is unavailable; retrying")
    if status == "NOT_FOUND":
        return ModelNotReady(f"{model} is not ready on the model server")
    if status == "CANCELLED":
        return TritonTimeout(f"{model}: the request was cancelled")
    return TritonError(f"{model} failed on this frame")


def channel_args(url: str) -> list[tuple[str, int | str]]:
    """tritonclient's defaults (no message size cap, keepalive), plus round-robin over every
    address of a ``dns:///name:port`` target (a Kubernetes headless Service: one call per pod in
    turn, not one pod per channel)."""
    keepalive = grpcclient.KeepAliveOptions()
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
    ]
    if url.startswith("dns:///"):
        options.append(("grpc.lb_policy_name", "round_robin"))
    return options


class TritonGateway:
    """Owns the aio client (create in the app's lifespan, ``await close()`` at shutdown).

    When Triton becomes unreachable, frames fail fast with ``TritonUnavailable`` while one
    shared probe (not one per client: no reconnect storm) polls readiness with backoff and
    reopens the way when Triton is back.
    """

    def __init__(
        self,
        url: str,
        request_timeout_s: float,
        max_in_flight: int = 0,
        client=None,
        on_up=None,
        shared_memory: tuple[int, str] | None = None,
        admin_key: str = "",
    ) -> None:
        self.url = url
        # Triton's key to its repository index (the models that failed to load, too); without
        # it the bridge lists the models Triton serves ready (its statistics)
        self.admin_key = admin_key
        self._said_listing: str | None = None
        self.on_up = on_up or (lambda up: None)  # told when the endpoint goes down and comes back
        self.request_timeout_s = request_timeout_s
        self._said_too_slow: set[str] = set()  # models refused for their speed, logged once each
        # tritonclient's aio client; the fast tests pass a stand-in with the same methods
        self.client = client or grpcclient.InferenceServerClient(url, channel_args=channel_args(url))
        self.down_since: float | None = None
        self._probe: asyncio.Task | None = None
        # 0: sized from the served model's config when first read (see capacity_of)
        self.auto_capacity = max_in_flight == 0
        self.limit = InFlightLimit(max_in_flight or 1)
        self._capacities: dict[str, int] = {}  # each model read so far: requests it runs at once
        self._checked: dict[str, tuple[float, ModelInfo]] = {}  # ready models, when last read
        self.observed = ObservedTimes()  # recent inference times, for the page's estimates
        # (region bytes, Triton's shared-memory key) for a Triton on this host: frames go through
        # system shared memory (bridge/shared_memory.py), falling back to plain gRPC
        self.regions = RegionPool(self.client, url, *shared_memory) if shared_memory else None

    async def servers_behind(self) -> int:
        """How many Triton servers this endpoint spreads over: the addresses a ``dns:///`` name
        resolves to (a Kubernetes headless Service: one per pod, round-robin), else 1. The
        bound on requests in flight grows with them, so more pods take more work."""
        if not self.url.startswith("dns:///"):
            return 1
        host, _, port = self.url.removeprefix("dns:///").rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError:
            return 1
        return max(1, len({info[4][0] for info in infos}))

    def expected_s(self, model: str) -> float:
        """Recent time of one inference of ``model`` here (0 until one has been answered)."""
        return self.observed.expected_s(model)

    @contextlib.asynccontextmanager
    async def turn(self, model: str) -> AsyncIterator[Turn]:
        """Wait (in the bridge, in arrival order) for a place among the requests in flight."""
        await self.limit.acquire()
        turn = Turn(self, model)
        try:
            yield turn
        finally:
            busy_s = turn.still_busy_s()
            if busy_s > 0:
                self.limit.release_after(busy_s)  # abandoned mid-run: Triton finishes it anyway
            else:
                self.limit.release()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        if self.regions is not None:
            await self.regions.close()
        await self.client.close()

    def regions_registered(self) -> int:
        """Shared-memory regions held registered with this endpoint (0: plain gRPC)."""
        return self.regions.registered if self.regions is not None else 0

    @property
    def available(self) -> bool:
        return self.down_since is None

    def mark_down(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("Triton at %s is unavailable; probing until it is back", self.url)
            self.on_up(False)
            if self.regions is not None:
                self.regions.forget()  # a Triton that comes back has none of them registered
            self._probe = asyncio.create_task(self._probe_until_ready())

    async def _probe_until_ready(self) -> None:
        delay_s = PROBE_FIRST_DELAY_S
        while not await self.server_ready():
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, PROBE_MAX_DELAY_S)
        log.info("Triton at %s is back after %.1f s", self.url, time.monotonic() - (self.down_since or 0))
        self.down_since = None
        self.on_up(True)

    async def server_ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready(client_timeout=HEALTH_TIMEOUT_S))
        except (InferenceServerException, grpc.RpcError):
            return False

    async def model_info(self, name: str) -> ModelInfo:
        """Ready, conforming to the contract, what it is (its spec, from its config's
        parameters), and whether it carries random weights."""
        try:
            if not await self.client.is_model_ready(name, client_timeout=HEALTH_TIMEOUT_S):
                return ModelInfo(name, ready=False, problem="not ready on the model server")
            meta = await self.client.get_model_metadata(name, client_timeout=HEALTH_TIMEOUT_S)
            config = (await self.client.get_model_config(name, client_timeout=HEALTH_TIMEOUT_S)).config
        except InferenceServerException as exc:
            error = _classify(exc, name)
            return ModelInfo(name, ready=False, problem=error.message)
        tensors = [
            [(t.name, t.datatype, tuple(t.shape)) for t in group] for group in (meta.inputs, meta.outputs)
        ]
        spec, problems = judge_served(name, tensors, config)
        if problems or spec is None:
            log.error("model %s is not served: it does not match the contract: %s", name, "; ".join(problems))
            return ModelInfo(
                name,
                ready=False,
                problem=f"served model does not match the contract: {'; '.join(problems)}",
                mismatch=True,
            )
        register(spec)
        if self.auto_capacity:
            # the endpoint's bound is the smallest served model's: the same whatever was read
            # last (a /readyz or /api/models call must not change admission)
            self._capacities[name] = capacity_of(config)
            self.limit.set_capacity(min(self._capacities.values()) * await self.servers_behind())
        ms, machine = served_speed(config) or (None, "")
        if ms is not None and ms / 1e3 > self.request_timeout_s:
            return self._too_slow(name, spec, ms, machine)
        return ModelInfo(
            name,
            ready=True,
            random_weights=is_random_weights(config),
            ms_per_frame=ms,
            measured_on=machine,
            spec=spec,
        )

    def _too_slow(self, name: str, spec, ms: float, machine: str) -> ModelInfo:
        """A model whose measured time for one frame is beyond the per-request deadline (Depth
        Pro's 1536x1536 input on a CPU): every frame would time out, so it is not offered, and
        says why and what to change."""
        problem = (
            f"slower than this bridge's deadline: {ms / 1e3:.1f} s a 640x480 frame on {machine or 'the server'}, "
            f"request_timeout_s is {self.request_timeout_s:g} s (raise BRIDGE_REQUEST_TIMEOUT_S to serve it)"
        )
        if name not in self._said_too_slow:
            self._said_too_slow.add(name)
            log.warning("model %s is not offered: %s", name, problem)
        return ModelInfo(
            name, ready=False, problem=problem, ms_per_frame=ms, measured_on=machine, spec=spec, too_slow=True
        )

    async def served_names(self) -> dict[str, str]:
        """The models Triton serves, each with why it failed to load ("" if it did not): its
        repository index (with the admin key: failed ones too, with Triton's reason), else the
        models its statistics report (those loaded), else the curated names."""
        if self.admin_key:
            try:
                index = await self.client.get_model_repository_index(
                    headers={ADMIN_KEY_HEADER: self.admin_key}, client_timeout=HEALTH_TIMEOUT_S
                )
                # a model unloaded on purpose (reason "unloaded") has not failed
                return {
                    model.name: model.reason
                    if model.state == "UNAVAILABLE" and model.reason not in ("", "unloaded")
                    else ""
                    for model in index.models
                }
            except InferenceServerException as exc:
                self._say_listing(
                    f"its repository index was refused ({exc.message()}); is BRIDGE_TRITON_ADMIN_KEY right?"
                )
        try:
            stats = await self.client.get_inference_statistics(client_timeout=HEALTH_TIMEOUT_S)
        except InferenceServerException as exc:
            self._say_listing(
                f"its statistics were refused ({exc.message()}): only the curated models are known"
            )
            return dict.fromkeys(MODELS, "")
        if not self.admin_key:
            self._say_listing(
                "without BRIDGE_TRITON_ADMIN_KEY the bridge lists the models Triton has loaded, "
                "not those that failed to load"
            )
        return dict.fromkeys(sorted({model.name for model in stats.model_stats}), "")

    def _say_listing(self, what: str) -> None:
        if self._said_listing != what:  # once, not at every /api/models
            self._said_listing = what
            log.info("the models of Triton at %s: %s", self.url, what)

    async def models(self) -> list[ModelInfo]:
        """Every model served, and the curated reference models (listed as missing if not)."""
        if not await self.server_ready():
            return [ModelInfo(name, ready=False, problem="model server unavailable") for name in CHECKPOINTS]
        served = await self.served_names()
        curated = [name for name in MODELS if name in served or name in CHECKPOINTS]
        names = curated + sorted(set(served) - set(curated))
        infos = await asyncio.gather(*(self.model_info(name) for name in names))
        return [
            ModelInfo(info.name, ready=False, problem=f"failed to load: {served[info.name]}", failed=True)
            if served.get(info.name) and not info.ready
            else info
            for info in infos
        ]

    async def check_model(self, name: str) -> ModelInfo:
        """Raise unless ``name`` is ready and conforms (at start-up and on every model switch)."""
        if not self.available:
            raise TritonUnavailable("the model server is unavailable; retrying")
        checked_at, info = self._checked.get(name, (-float("inf"), None))
        if info is not None and time.monotonic() - checked_at < CHECKED_TTL_S:
            return info  # however many streams switch, a model costs Triton 3 calls a second at most
        info = await self.model_info(name)
        if info.ready:
            self._checked[name] = (time.monotonic(), info)
            return info
        if info.mismatch:
            raise ModelMismatch(f"{name}: {info.problem}")
        if not await self.server_ready():
            raise TritonUnavailable("the model server is unavailable; retrying")
        raise ModelNotReady(f"{name} is {info.problem}")

    async def infer(self, model: str, rgb: np.ndarray, timeout_s: float | None = None) -> Inferred:
        """RGB uint8 [H, W, 3] -> depth float32 [H, W] (and the camera, from a model that
        estimates it), within ``timeout_s`` (default: the per-request deadline). Triton hears the deadline too: a request that outlives it is
        cancelled, and Triton's queue policy (dynamic batcher) drops it unrun."""
        if not self.available:
            raise TritonUnavailable("the model server is unavailable; retrying")
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        region = await self._region_for(rgb, timeout_s)
        try:
            answer = await self._request(model, rgb, timeout_s, region)
        except SharedMemoryGone:  # Triton restarted between two frames: its regions went with it
            if self.regions is not None:
                self.regions.forget()
            remaining_s = timeout_s - (time.perf_counter() - started)
            answer = await self._request(model, rgb, max(remaining_s, 0.001), None)
        self.observed.add(model, time.perf_counter() - started)
        return answer

    async def _region_for(self, rgb: np.ndarray, timeout_s: float) -> Region | None:
        if self.regions is None:
            return None
        region = await self.regions.acquire(timeout_s)
        if region is not None and not region.fits(rgb):
            self.regions.release(region)
            return None
        return region

    async def _request(
        self, model: str, rgb: np.ndarray, timeout_s: float, region: Region | None
    ) -> Inferred:
        """One request, through ``region`` when given (its pool gets it back only if Triton is
        done with it)."""
        try:
            if region is not None:
                region.write_frame(rgb)
            camera = _estimates_camera(model)
            result = await self.client.infer(
                model,
                **depth_request(rgb[None], region.name if region else None, intrinsics=camera),
                timeout=max(1, int(timeout_s * 1e6)),
                client_timeout=timeout_s,
            )
            answer = Inferred(
                self._depth_of(model, result, rgb, region), self._camera_of(model, result) if camera else None
            )
        except BaseException as exc:  # a timeout, a client gone (cancelled), an error
            if region is not None and self.regions is not None:
                self.regions.retire(region)
            if isinstance(exc, InferenceServerException):
                if region is not None and SHARED_MEMORY_MISSING in (exc.message() or "").lower():
                    raise SharedMemoryGone() from None
                error = _classify(exc, model)
                if isinstance(error, TritonUnavailable):
                    self.mark_down()
                raise error from None
            raise
        if region is not None and self.regions is not None:
            self.regions.release(region)
        return answer

    @staticmethod
    def _camera_of(model: str, result) -> np.ndarray:
        intrinsics = result.as_numpy(INTRINSICS_NAME)
        if intrinsics is None or intrinsics.shape != (1, 3, 3):
            log.error(
                "%s returned intrinsics of shape %s", model, None if intrinsics is None else intrinsics.shape
            )
            raise BadOutput(f"{model} returned no camera (INTRINSICS) or a wrongly shaped one")
        return intrinsics[0]

    @staticmethod
    def _depth_of(model: str, result, rgb: np.ndarray, region: Region | None) -> np.ndarray:
        output = result.get_output(OUTPUT_NAME)
        shape = tuple(output.shape) if output is not None else None
        if shape != (1, *rgb.shape[:2]):
            log.error("%s returned shape %s for a %s frame", model, shape, rgb.shape)
            raise BadOutput(f"{model} returned a wrongly shaped depth map")
        return region.read_depth(rgb.shape) if region is not None else result.as_numpy(OUTPUT_NAME)[0]


class Inferred(NamedTuple):
    """One frame's answer: depth [H, W], and the camera [3, 3] from a model that estimates it."""

    depth: np.ndarray
    intrinsics: np.ndarray | None = None


def _estimates_camera(model: str) -> bool:
    """Whether to ask ``model`` for INTRINSICS (its served config's spec says it has them)."""
    try:
        return contract.spec_of(model).intrinsics
    except KeyError:
        return False


class Turn:
    """One place among an endpoint's requests in flight, held by one stream for one frame."""

    def __init__(self, gateway: TritonGateway, model: str) -> None:
        self.gateway = gateway
        self.model = model
        self.started: float | None = None
        self.finished = False

    def can_finish_by(self, deadline: float) -> bool:
        """False when the model's recent time says the answer would come after ``deadline``
        (time.perf_counter()): sending it would only make Triton run a frame nobody reads. A model slower
        than the whole deadline is still tried, so the client hears ``timeout``."""
        expected = self.gateway.expected_s(self.model)
        if expected >= self.gateway.request_timeout_s:
            return True
        return time.perf_counter() + expected <= deadline

    async def infer(self, rgb: np.ndarray, deadline: float) -> Inferred:
        self.started = time.perf_counter()
        try:
            depth = await self.gateway.infer(self.model, rgb, max(deadline - self.started, 0.001))
        except TritonTimeout:
            raise  # Triton may still be running it
        except FrameError:  # Triton answered (an error, or an output the bridge cannot use)
            self.finished = True
            raise
        self.finished = True
        return depth

    def still_busy_s(self) -> float:
        """How long Triton is likely still busy with a request that was abandoned mid-run."""
        if self.started is None or self.finished:
            return 0.0
        return max(0.0, self.gateway.expected_s(self.model) - (time.perf_counter() - self.started))


def judge_served(
    name: str, tensors: list, config: model_config_pb2.ModelConfig
) -> tuple[ModelSpec | None, list[str]]:
    """(the spec a served model's config records, what keeps it from being served): its tensors
    against the contract, its spec as recorded, and the two agreeing on the camera. Reads what
    anyone who writes a config.pbtxt into the repository controls (fuzzed: tests/fuzz)."""
    problems = contract_violations(name, *tensors)
    try:
        spec = spec_of(config)
    except ValueError as exc:
        return None, [*problems, str(exc)]
    if spec.intrinsics != declares_intrinsics(tensors[1]):  # the spec and the outputs: the camera
        problems.append(
            f"its spec says intrinsics={spec.intrinsics}, its outputs are {[t[0] for t in tensors[1]]}"
        )
    return spec, problems


def capacity_of(config: model_config_pb2.ModelConfig) -> int:
    """Requests one model runs at once: its instances, times the batch when Triton batches."""
    # at least 1 each (a config with a negative count, found by fuzzing, gave a negative bound;
    # Triton refuses such a config, the catalog must not trust that it did)
    instances = max(sum(max(group.count, 1) for group in config.instance_group), 1)
    batch = max(config.max_batch_size, 1) if config.HasField("dynamic_batching") else 1
    return instances * batch
