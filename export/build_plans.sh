#!/usr/bin/env bash
# Build TensorRT FP16 plans from the exported ONNX with trtexec inside the NGC Triton container,
# so the plan matches the TensorRT version of the Triton that serves it. Needs a GPU and Docker.
# A plan is tied to the GPU model (compute capability) and TensorRT version it was built on:
# build it on the same GPU type, with the same TRITON_IMAGE, as production.
#
# Optimization profile over batch and image size (N x H x W x 3):
#   min 1x120x160, opt 1x480x640 (a webcam frame), max 4x1080x1920.
set -euo pipefail
TRITON_IMAGE=${TRITON_IMAGE:-nvcr.io/nvidia/tritonserver:24.10-py3}
REPOSITORY=${REPOSITORY:-model_repository}
TARGET=${TARGET:-model_repository_trt}
MIN_SHAPE=${MIN_SHAPE:-1x120x160x3}
OPT_SHAPE=${OPT_SHAPE:-1x480x640x3}
MAX_SHAPE=${MAX_SHAPE:-4x1080x1920x3}
PYTHON=${PYTHON:-.venv/bin/python}

command -v docker >/dev/null || { echo "make plans needs Docker and an NVIDIA GPU" >&2; exit 2; }
for model_dir in "$REPOSITORY"/*/; do
  name=$(basename "$model_dir")
  [ -f "$model_dir/1/model.onnx" ] || continue
  # plans from the FP32 graphs only: a twin (INT8: MatMulInteger and DynamicQuantizeLinear,
  # which TensorRT does not build; BF16: the FP32 graph again) gets no plan, and says so
  case "$name" in
    *_int8|*_bf16) echo "skipping $name: a CPU twin (TensorRT plans are built from the FP32 graphs)"; continue ;;
  esac
  mkdir -p "$TARGET/$name/1"
  echo "building $TARGET/$name/1/model.plan (FP16, profile $MIN_SHAPE .. $OPT_SHAPE .. $MAX_SHAPE)"
  if ! docker run --rm --gpus all -v "$(realpath "$REPOSITORY")":/src:ro -v "$(realpath "$TARGET")":/dst \
    "$TRITON_IMAGE" /usr/src/tensorrt/bin/trtexec \
      --onnx="/src/$name/1/model.onnx" --saveEngine="/dst/$name/1/model.plan" --fp16 \
      --minShapes=IMAGE:"$MIN_SHAPE" --optShapes=IMAGE:"$OPT_SHAPE" --maxShapes=IMAGE:"$MAX_SHAPE"; then
    rm -rf "${TARGET:?}/$name"  # no half-built model left behind for Triton to trip on
    echo "make plans: building $name failed (is this a GPU machine with the NVIDIA Container Toolkit?)" >&2
    exit 1
  fi
done
"$PYTHON" -m export.flavours tensorrt_plan --source "$REPOSITORY" --target "$TARGET"
echo "serve with: docker run --gpus all -v $(realpath "$TARGET"):/models $TRITON_IMAGE tritonserver --model-repository=/models"
