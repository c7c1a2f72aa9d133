"""The direct Triton gRPC client (``python -m client``)."""
