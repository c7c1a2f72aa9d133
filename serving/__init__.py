"""The embedded Triton: its launcher and supervisor, the repository flavour it serves (derived
from ``model_repository/``) and the Python-backend model that runs the exported ONNX (``demo/``
starts it beside the bridge). The runtime counterpart of ``export``; it imports the shared
``depthstream`` package, never the build step."""
