"""A stand-in for tritonclient's aio gRPC client, behind the bridge's real gateway, for the fast
in-process tests: every error branch of the app and the session, without a Triton."""

from __future__ import annotations

import asyncio
import math
from multiprocessing import shared_memory
from types import SimpleNamespace

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from depthstream.contract import (
    INPUT_DTYPE,
    INPUT_NAME,
    INTRINSICS_NAME,
    MODELS,
    OUTPUT_DTYPE,
    OUTPUT_NAME,
    RANDOM_WEIGHTS_MARKER,
)
from depthstream.model_config import MEASURED_ON_PARAM, MS_PER_FRAME_PARAM, spec_params
from depthstream.request import SHM_KEY_HEADER


def default_intrinsics(batch_shape, hfov_deg: float = 65.0) -> np.ndarray:
    n, height, width, _ = batch_shape
    focal = width / (2 * math.tan(math.radians(hfov_deg) / 2))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float32)
    return np.broadcast_to(camera, (n, 3, 3)).copy()


def triton_error(status: str, message: str = "") -> InferenceServerException:
    return InferenceServerException(message, status=f"StatusCode.{status}")


class FakeTriton:
    """Answers like Triton: health, metadata, config and inference, with knobs for each fault."""

    def __init__(self) -> None:
        self.up = True
        self.not_ready: set[str] = set()
        self.mismatched: set[str] = set()  # models whose metadata breaks the contract
        self.served = dict(MODELS)  # name -> spec, as the served configs record them
        self.failed: dict[str, str] = {}  # in the repository, failed to load: name -> Triton's reason
        self.random_weights = False
        self.ms_per_frame: dict[str, float] = {}  # speeds "recorded" by the serving side, per model
        self.failure: InferenceServerException | None = None  # raised by infer
        self.output = None  # callable (batch) -> array, instead of a gradient at the input's size
        self.delay_s = 0.0
        self.instances: dict[str, int] = {}  # instance count per model (default 1)
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.depth_of_pixels = None  # callable (uint8 batch) -> depth, from the pixels sent
        # a camera model's INTRINSICS: callable (batch shape) -> [N, 3, 3]; by default a 65-degree
        # horizontal field of view, square pixels, the principal point at the centre
        self.intrinsics_of = default_intrinsics
        self.without_intrinsics: set[str] = set()  # camera models whose metadata lacks the output
        # system shared memory, as Triton keeps it: regions by name, behind a key when set
        self.shm_key: str | None = None
        self.regions: dict[str, shared_memory.SharedMemory] = {}
        self.region_requests: dict[str, int] = {}  # requests using each region now

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if not self.up:
            raise triton_error("UNAVAILABLE", "failed to connect to all addresses")

    async def is_server_ready(self, client_timeout=None) -> bool:
        self._count("is_server_ready")
        return True

    async def is_model_ready(self, name, client_timeout=None) -> bool:
        self._count("is_model_ready")
        return name in self.served and name not in self.not_ready

    async def get_inference_statistics(self, model_name="", client_timeout=None, **_):
        self._count("get_inference_statistics")
        stats = [SimpleNamespace(name=name) for name in self.served if name not in self.not_ready]
        return SimpleNamespace(model_stats=stats)

    async def get_model_repository_index(self, headers=None, client_timeout=None, **_):
        self._count("get_model_repository_index")
        ready = [SimpleNamespace(name=name, state="READY", reason="") for name in self.served]
        failed = [
            SimpleNamespace(name=name, state="UNAVAILABLE", reason=why) for name, why in self.failed.items()
        ]
        return SimpleNamespace(models=ready + failed)

    async def get_model_metadata(self, name, client_timeout=None):
        self._count("get_model_metadata")
        dtype = "FP32" if name in self.mismatched else INPUT_DTYPE
        tensor = SimpleNamespace
        outputs = [tensor(name=OUTPUT_NAME, datatype=OUTPUT_DTYPE, shape=[-1, -1, -1])]
        if name in self.served and self.served[name].intrinsics and name not in self.without_intrinsics:
            outputs.append(tensor(name=INTRINSICS_NAME, datatype="FP32", shape=[-1, 3, 3]))
        return SimpleNamespace(
            inputs=[tensor(name=INPUT_NAME, datatype=dtype, shape=[-1, -1, -1, 3])], outputs=outputs
        )

    async def get_model_config(self, name, client_timeout=None):
        self._count("get_model_config")
        config = mc.ModelConfig(name=name, max_batch_size=4)
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=self.instances.get(name, 1))
        config.parameters[RANDOM_WEIGHTS_MARKER].string_value = "true" if self.random_weights else "false"
        if name in self.served:
            for key, text in spec_params(self.served[name]).items():
                config.parameters[key].string_value = text
        if name in self.ms_per_frame:
            config.parameters[MS_PER_FRAME_PARAM].string_value = str(self.ms_per_frame[name])
            config.parameters[
                MEASURED_ON_PARAM
            ].string_value = "2 x Test CPU, 2 threads, CPUExecutionProvider"
        return SimpleNamespace(config=config)

    async def infer(self, model, inputs, outputs=None, timeout=None, client_timeout=None, **_):
        self._count("infer")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if client_timeout is not None and self.delay_s > client_timeout:
                await asyncio.sleep(client_timeout)
                raise triton_error("DEADLINE_EXCEEDED", "Deadline Exceeded")
            await asyncio.sleep(self.delay_s)
            if self.failure is not None:
                raise self.failure
            batch_shape = inputs[0].shape()
            if self.output is not None:
                depth = self.output(batch_shape)
            elif self.depth_of_pixels is not None:
                depth = self.depth_of_pixels(self._pixels(inputs[0]))
            else:
                n, height, width, _ = batch_shape
                depth = np.broadcast_to(np.linspace(0, 1, width, dtype=np.float32), (n, height, width)).copy()
            result = self._result(depth, outputs[0] if outputs else None)
            if outputs and any(o._output.name == INTRINSICS_NAME for o in outputs):
                camera = self.intrinsics_of(batch_shape)
                depth_of = result.as_numpy
                result.as_numpy = lambda name: camera if name == INTRINSICS_NAME else depth_of(name)
            return result
        finally:
            self.in_flight -= 1

    def _pixels(self, tensor) -> np.ndarray:
        """The uint8 batch a request carries, in its message or in a registered region."""
        region = self._region_of(tensor._input.parameters)
        if region is None:
            data = tensor._raw_content
        else:
            shm, offset, size = region
            data = bytes(shm.buf[offset : offset + size])
        return np.frombuffer(data, np.uint8).reshape(tensor.shape())

    def _region_of(self, parameters) -> tuple[shared_memory.SharedMemory, int, int] | None:
        if "shared_memory_region" not in parameters:
            return None
        name = parameters["shared_memory_region"].string_param
        if name not in self.regions:
            raise triton_error("NOT_FOUND", f"Unable to find shared memory region: '{name}'")
        offset = parameters["shared_memory_offset"].int64_param if "shared_memory_offset" in parameters else 0
        return self.regions[name], offset, parameters["shared_memory_byte_size"].int64_param

    def _result(self, depth: np.ndarray, requested) -> SimpleNamespace:
        if depth is None:  # a response without the output asked for
            return SimpleNamespace(as_numpy=lambda name: None, get_output=lambda name: None)
        region = self._region_of(requested._output.parameters) if requested is not None else None
        if region is not None:  # written into the region; the message says only its shape
            shm, offset, size = region
            data = np.ascontiguousarray(depth, np.float32).tobytes()
            assert len(data) <= size, "the region's output part is too small"
            shm.buf[offset : offset + len(data)] = data
        shape = SimpleNamespace(shape=list(depth.shape))
        return SimpleNamespace(
            as_numpy=lambda name: None if region is not None or name != OUTPUT_NAME else depth,
            get_output=lambda name: shape if name == OUTPUT_NAME else None,
        )

    async def register_system_shared_memory(self, name, key, byte_size, offset=0, headers=None, **_):
        self._count("register_system_shared_memory")
        if self.shm_key is not None and (headers or {}).get(SHM_KEY_HEADER) != self.shm_key:
            raise triton_error(
                "UNAVAILABLE", f"This protocol is restricted, expecting header '{SHM_KEY_HEADER}'"
            )
        self.regions[name] = shared_memory.SharedMemory(key.lstrip("/"))
        assert self.regions[name].size >= byte_size

    async def unregister_system_shared_memory(self, name="", headers=None, **_):
        self._count("unregister_system_shared_memory")
        if self.shm_key is not None and (headers or {}).get(SHM_KEY_HEADER) != self.shm_key:
            raise triton_error(
                "UNAVAILABLE", f"This protocol is restricted, expecting header '{SHM_KEY_HEADER}'"
            )
        if self.region_requests.get(name):
            raise triton_error(
                "INTERNAL", f"Cannot unregister shared memory region '{name}', it is currently in use"
            )
        region = self.regions.pop(name, None)
        if region is not None:
            region.close()

    def restart(self) -> None:
        """A Triton that came back: it knows none of the regions registered before."""
        for region in self.regions.values():
            region.close()
        self.regions.clear()

    async def close(self) -> None:
        pass
