"""The direct Triton gRPC client (``python -m client``; ``python -m bridge.client`` still works)."""
