"""What every part of depthstream shares: contract.py (the model contract), model_config.py
(Triton configs), settings.py (the settings scheme), runtime.py (ONNX Runtime sessions as served,
speed records), accelerator.py (CPU or GPU build, providers), request.py (one gRPC request),
render/ (drawing depth: colormaps, 16-bit depth).

The build step (``export``), the runtime (``bridge``, ``serving``), ``demo``, the tools
(``client``, ``bench``) and the tests import from here; nothing here imports them.
"""
