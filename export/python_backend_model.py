"""Triton Python-backend model (embedded CPU flavour): runs the exported model.onnx with ONNX Runtime.

Copied to ``<embedded repository>/<model>/1/model.py`` by export.embedded. It reads tensor names,
dtypes, the ONNX path and the thread count from its own config.pbtxt, so one file serves every
model. Requests of the same image size are run as one batch; each request gets its own error.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        (inp,), (out,) = config["input"], config["output"]
        self.input_name, self.output_name = inp["name"], out["name"]
        self.input_dtype = pb_utils.triton_string_to_numpy(inp["data_type"])
        self.output_dtype = pb_utils.triton_string_to_numpy(out["data_type"])

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads") or os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(params["onnx_path"], options, providers=["CPUExecutionProvider"])
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([self.input_name], [self.output_name]):
            raise pb_utils.TritonModelException(
                f"{params['onnx_path']} has tensors {names}, config wants "
                f"{self.input_name} -> {self.output_name}"
            )

    def execute(self, requests):
        responses = [None] * len(requests)
        by_shape = {}
        for index, request in enumerate(requests):
            image = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            if image.dtype != self.input_dtype or image.ndim != 4 or 0 in image.shape:
                responses[index] = self._error(
                    f"{self.input_name} must be a non-empty [N, H, W, 3] {np.dtype(self.input_dtype).name} "
                    f"tensor; got shape {list(image.shape)} {image.dtype.name}"
                )
                continue
            by_shape.setdefault(image.shape[1:], []).append((index, image))
        for members in by_shape.values():
            self._run(members, responses)
        return responses

    def _run(self, members, responses):
        images = [image for _, image in members]
        batch = images[0] if len(images) == 1 else np.concatenate(images)
        try:
            depth = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as exc:  # ONNX Runtime failures become this request's error
            for index, _ in members:
                responses[index] = self._error(f"inference failed: {exc}")
            return
        depth = depth.astype(self.output_dtype, copy=False)
        start = 0
        for index, image in members:
            stop = start + image.shape[0]
            tensor = pb_utils.Tensor(self.output_name, depth[start:stop])
            responses[index] = pb_utils.InferenceResponse(output_tensors=[tensor])
            start = stop

    @staticmethod
    def _error(message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
