"""Triton Python-backend model (embedded CPU flavour): runs the exported model.onnx with ONNX Runtime
or OpenVINO, whichever its config names (``engine``: measured faster here, depthstream.engine_choice).

Copied to ``<embedded repository>/<model>/1/model.py`` by the serving package. It reads tensor
names, dtypes, the ONNX path, the thread count and the contract's per-image limits from its own
config.pbtxt, so one file serves every model. Each request gets its own answer or error:

- a request whose client has gone (cancelled gRPC call, or its deadline passed while it
  waited in Triton's queue) is not run: nobody would read the answer;
- an image beyond the contract's limits (pixels, sides) is refused before anything runs;
- the images of a batch run one at a time: the peak memory of one image whatever the batch
  (on the CPU, batching was slower anyway: 1.1 frames/s against 1.9 one at a time).

The counters ``depthstream_model_runs_total``, ``depthstream_model_run_ms_total`` (ONNX Runtime's
own time: what Triton's compute_infer adds around it is this backend's cost) and
``depthstream_requests_skipped_total`` (by reason) are on Triton's metrics endpoint beside its own.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# on the stub's PYTHONPATH (serving.triton.server_env)
from depthstream.runtime import Runner, infer_outputs, open_session


def _error_code(name):
    # TritonError codes exist since Triton 23.x; fall back to the default code before that
    return getattr(pb_utils.TritonError, name, None)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        (inp,), outputs = config["input"], config["output"]
        self.model_name = args["model_name"]
        self.input_name = inp["name"]
        # DEPTH, and INTRINSICS where the model estimates its camera: each with its dtype
        self.outputs = [(out["name"], pb_utils.triton_string_to_numpy(out["data_type"])) for out in outputs]
        self.output_names = [name for name, _ in self.outputs]
        self.input_dtype = pb_utils.triton_string_to_numpy(inp["data_type"])
        self.max_pixels = int(params["max_image_pixels"])
        self.max_side = int(params["max_image_side"])
        self.min_side = int(params["min_image_side"])
        # a slower machine on purpose (tests and drills of overload): seconds added to each run
        self.extra_s = float(params.get("simulated_extra_ms") or 0) / 1e3

        threads = int(params.get("intra_op_threads") or os.cpu_count() or 1)
        providers = (params.get("providers") or "CPUExecutionProvider").split(",")
        runner = Runner(params.get("engine") or "onnxruntime", params.get("precision") or "f32")
        cache = params.get("openvino_cache" if runner.engine == "openvino" else "trt_cache")
        self.session, fallback = open_session(
            params["onnx_path"], providers, threads, Path(cache) if cache else None, runner
        )
        logger = pb_utils.Logger
        if fallback:
            logger.log_warn(f"{self.model_name}: {fallback}")
        engine = "OpenVINO" if runner.engine == "openvino" else "ONNX Runtime"
        logger.log_info(f"{self.model_name}: {engine} runs it on {self.session.get_providers()[0]}")
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([self.input_name], self.output_names):
            raise pb_utils.TritonModelException(
                f"{params['onnx_path']} has tensors {names}, config wants "
                f"{self.input_name} -> {', '.join(self.output_names)}"
            )
        self._metrics()

    def _metrics(self):
        runs = pb_utils.MetricFamily(
            name="depthstream_model_runs_total",
            description="Images run through the network by the Python-backend model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        skipped = pb_utils.MetricFamily(
            name="depthstream_requests_skipped_total",
            description="Requests answered with an error without running (reason: cancelled, too_large, bad_shape)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        run_ms = pb_utils.MetricFamily(
            name="depthstream_model_run_ms_total",
            description="Milliseconds the runtime (ONNX Runtime or OpenVINO) spent running images in the Python-backend model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.families = (runs, skipped, run_ms)  # a family must outlive its metrics
        self.runs = runs.Metric(labels={"model": self.model_name})
        self.run_ms = run_ms.Metric(labels={"model": self.model_name})
        self.skipped = {
            reason: skipped.Metric(labels={"model": self.model_name, "reason": reason})
            for reason in ("cancelled", "too_large", "bad_shape")
        }

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        if request.is_cancelled():
            return self._skip("cancelled", "the request was cancelled before it ran", "CANCELLED")
        image = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        problem = self._shape_problem(image)
        if problem is not None:
            return self._skip(*problem)
        results = []
        for item in image:  # one image at a time: bounded memory, and a cancel is seen between them
            if results and request.is_cancelled():
                return self._skip("cancelled", "the request was cancelled while it ran", "CANCELLED")
            if self.extra_s:
                time.sleep(self.extra_s)
            started = time.perf_counter()
            try:
                result = infer_outputs(self.session, item[None], self.output_names)  # served run options
            except Exception as exc:  # the runtime's failures become this request's error
                return self._error(f"inference failed: {exc}", "INTERNAL")
            self.run_ms.increment((time.perf_counter() - started) * 1e3)
            self.runs.increment(1)
            results.append(result)
        tensors = []
        for index, (name, dtype) in enumerate(self.outputs):
            parts = [result[index] for result in results]
            array = np.concatenate(parts) if len(parts) > 1 else parts[0]
            tensors.append(pb_utils.Tensor(name, array.astype(dtype, copy=False)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _shape_problem(self, image):
        """(reason, message, code) when the image is outside the contract, else None."""
        if image.dtype != self.input_dtype or image.ndim != 4 or image.shape[3] != 3 or 0 in image.shape:
            return (
                "bad_shape",
                f"{self.input_name} must be a non-empty [N, H, W, 3] {np.dtype(self.input_dtype).name} "
                f"tensor; got shape {list(image.shape)} {image.dtype.name}",
                "INVALID_ARG",
            )
        height, width = image.shape[1:3]
        if min(height, width) < self.min_side:
            return (
                "bad_shape",
                f"image is {width}x{height}; each side must be >= {self.min_side}",
                "INVALID_ARG",
            )
        if max(height, width) > self.max_side or height * width > self.max_pixels:
            return (
                "too_large",
                f"image is {width}x{height} = {height * width} pixels; the limits are {self.max_pixels} "
                f"pixels and {self.max_side} pixels a side",
                "INVALID_ARG",
            )
        return None

    def _skip(self, reason, message, code):
        self.skipped[reason].increment(1)
        return self._error(message, code)

    @staticmethod
    def _error(message, code):
        code = _error_code(code)
        error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
        return pb_utils.InferenceResponse(output_tensors=[], error=error)
