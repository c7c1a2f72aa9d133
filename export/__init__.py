"""Export the depth models from PyTorch checkpoints to ONNX inside a Triton model repository."""
