"""depthstream bridge: the browser's WebSocket <-> Triton's gRPC (the model contract is
``depthstream.contract``; drawing depth is ``depthstream.render``)."""
