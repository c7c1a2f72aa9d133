"""depthstream bridge: browser <-> Triton, plus the shared model contract."""
