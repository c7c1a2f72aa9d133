"""A stand-in for Triton's ``triton_python_backend_utils``, as much of it as the Python-backend
model uses: the fuzzer runs serving/python_backend_model.py in-process, without a tritonserver."""

from __future__ import annotations

import numpy as np

TRITON_STRING_TO_NUMPY = {"TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32, "TYPE_INT32": np.int32}


def triton_string_to_numpy(name: str):
    return TRITON_STRING_TO_NUMPY[name]


class TritonError:
    INVALID_ARG, INTERNAL, CANCELLED = "INVALID_ARG", "INTERNAL", "CANCELLED"

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message, self.code = message, code


class TritonModelException(Exception):
    pass


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
        self.output_tensors, self.error = output_tensors, error


class Request:
    """What Triton hands the model: one input tensor, and whether its client has gone."""

    def __init__(self, tensors: list[Tensor], cancelled: bool = False) -> None:
        self.tensors, self.cancelled = tensors, cancelled

    def is_cancelled(self) -> bool:
        return self.cancelled


def get_input_tensor_by_name(request: Request, name: str) -> Tensor | None:
    return next((t for t in request.tensors if t.name == name), None)


class _Metric:
    def __init__(self) -> None:
        self.value = 0.0

    def increment(self, by: float) -> None:
        self.value += by


class MetricFamily:
    COUNTER = "counter"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name = name

    def Metric(self, labels: dict[str, str]) -> _Metric:  # noqa: N802  (Triton's name)
        return _Metric()


class Logger:
    @staticmethod
    def log_info(message: str) -> None:
        pass

    @staticmethod
    def log_warn(message: str) -> None:
        pass
