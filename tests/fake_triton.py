"""A stand-in for tritonclient's aio gRPC client, behind the bridge's real gateway, for the fast
in-process tests: every error branch of the app and the session, without a Triton."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from depthstream.contract import (
    INPUT_DTYPE,
    INPUT_NAME,
    MODELS,
    OUTPUT_DTYPE,
    OUTPUT_NAME,
    RANDOM_WEIGHTS_MARKER,
)
from depthstream.model_config import MEASURED_ON_PARAM, MS_PER_FRAME_PARAM


def triton_error(status: str, message: str = "") -> InferenceServerException:
    return InferenceServerException(message, status=f"StatusCode.{status}")


class FakeTriton:
    """Answers like Triton: health, metadata, config and inference, with knobs for each fault."""

    def __init__(self) -> None:
        self.up = True
        self.not_ready: set[str] = set()
        self.mismatched: set[str] = set()  # models whose metadata breaks the contract
        self.random_weights = False
        self.ms_per_frame: dict[str, float] = {}  # speeds "recorded" by the serving side, per model
        self.failure: InferenceServerException | None = None  # raised by infer
        self.output = None  # callable (batch) -> array, instead of a gradient at the input's size
        self.delay_s = 0.0
        self.instances: dict[str, int] = {}  # instance count per model (default 1)
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if not self.up:
            raise triton_error("UNAVAILABLE", "failed to connect to all addresses")

    async def is_server_ready(self, client_timeout=None) -> bool:
        self._count("is_server_ready")
        return True

    async def is_model_ready(self, name, client_timeout=None) -> bool:
        self._count("is_model_ready")
        return name in MODELS and name not in self.not_ready

    async def get_model_metadata(self, name, client_timeout=None):
        self._count("get_model_metadata")
        dtype = "FP32" if name in self.mismatched else INPUT_DTYPE
        tensor = SimpleNamespace
        return SimpleNamespace(
            inputs=[tensor(name=INPUT_NAME, datatype=dtype, shape=[-1, -1, -1, 3])],
            outputs=[tensor(name=OUTPUT_NAME, datatype=OUTPUT_DTYPE, shape=[-1, -1, -1])],
        )

    async def get_model_config(self, name, client_timeout=None):
        self._count("get_model_config")
        config = mc.ModelConfig(name=name, max_batch_size=4)
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=self.instances.get(name, 1))
        config.parameters[RANDOM_WEIGHTS_MARKER].string_value = "true" if self.random_weights else "false"
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
            else:
                n, height, width, _ = batch_shape
                depth = np.broadcast_to(np.linspace(0, 1, width, dtype=np.float32), (n, height, width)).copy()
            return SimpleNamespace(as_numpy=lambda name: depth if name == OUTPUT_NAME else None)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass
